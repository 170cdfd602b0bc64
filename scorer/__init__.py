"""Rank social-media creatives by predicted engagement with a fastai vision learner.

The glossary: each word of the domain in a line, with its one meaning here. Classes, functions, modules,
tables, settings, messages and docs use these words in this sense only (tests/test_docs.py checks names).

    creative        a file a marketer wants scored before launch: a still (an image) or a video
    frame           one picture sampled from a video: its cover, its hook, the rest
    hook            a video's first video.hook_seconds, which weigh more than the rest
    inbox           the hot folder marketers drop creatives into
    outbox          the folder reports are written to, with scored/ and rejected/ below it by default
    batch           the creatives that arrived together, scored into one report
    report          the workbook of one batch or one `scorer score`; latest.xlsx is the window's
    decision        what became of an inbox file: scored, rejected or duplicate (the ledger's files.decision)
    disposal        moving a decided file out of the inbox, to its archive or rejected folder
    ledger          state/ledger.sqlite: every decision, so that a restart never rescores or loses a file
    notification    a message to an Apprise destination; those waiting sit in the notification queue
    plan            a creative's planned posting time and caption: a sidecar or a plan.csv row
    sidecar         <name>.txt or <name>.json beside a creative, holding its plan
    signals         facts about posting time and caption, from a past post or a plan (context.signals)
    embedding       the learner's pooled vector for a creative, from the forward pass that gave its probabilities
    geometry        how a decoded picture becomes the learner's input (its Resize), and how far JPEGs may be drafted
    look-alikes     the account's past posts nearest a creative's embedding, from the evidence index
    print           a perceptual hash of a creative, one per crop, that matches a launched post back to it
    likeness        a creative's prints and embedding, kept to match a launched post back to it
    pin             a trusted SHA-256 of the model or of a file made from it; other content is refused
    fast start      what a learner's first start keeps in state/ so that later starts need neither fastai nor PyTorch
    finding         what a once-per-model check (decode, precision) measured, and what it allows; kept in state/
    outcome         what a launched post really got: its likes and comments
    launch          a launched post paired with the creative scored before it, and how its prediction fared
    track record    a model's predictions against the outcomes of its launches, with a verdict
    card            what training writes beside the model: its figures against the baseline, and the verdict
    verdict         one sentence: did the model (card) or its picks (track record) do better than a guess

The map: every module in a line. The house has rooms, one per command, standing on shared floors.
A room imports the floors and never a room beside it, except a module marked [shared] here; a floor
imports only the ground and the floors listed before it. tests/test_architecture.py checks this, and that there are no
import circles, no module over 300 lines and no function over 50; tests/test_docs.py checks this map.

Ground: plain data, settings and idioms that every floor uses.

    errors.py           the ScorerError tree
    results.py          what scoring produces: plain data shared by every room
    track_record.py     a launch and a track record: what the ledger keeps, the reports and the web page show
    settings.py         typed settings: every key, its default and its documentation
    settings_text.py    the settings as text: the start-up log's lines, every key for the reference
    config.py           reads config.yaml over settings.py's typed defaults; the only YAML reader
    fsutil.py           atomic write, free name, safe open, SHA-256: each idiom written once
    textsafe.py         untrusted text made safe for spreadsheets and logs
    sqlitetx.py         the one immediate transaction the SQLite stores (ledger, notification queue) write in
    memory.py           gives freed memory back, so a long-running process stays at its working size
    console.py          logging set-up, progress bars, the live status line and printed summaries (rich)
    sdnotify.py         sd_notify(3): READY, STATUS and watchdog pings, for `scorer watch` and `scorer serve`
    child.py            a `python -m` child process over a socket pair, killed whatever it does; reaped one at a time

Floors, from the bottom up:

    context/            posting time and caption beside the image
        plan.py             a creative's plan: a sidecar <name>.txt / <name>.json, or a plan.csv row
        signals.py          the context signals, derived alike from past posts and a planned post
        combined.py         the combined model: logistic regression on the image embedding and the context
        advice.py           Advisor: the Engagement score at the planned time, and the best slots of the coming week
    decoding/           files into the learner's input pixels; Pillow and numpy, and PyAV once a video arrives (this
                        runs in worker processes)
        vet.py              what is ignored, read and opened (before any pixel is decoded)
        decode.py           decoding into the learner's input pixels; fastai's Resize, reproduced
        reasons.py          why a file cannot be decoded: each reason of the workers, bulk and the video decoder, once
        video_probe.py      a video known by its content and probed within VideoLimits, before any frame is decoded
        video.py            a video's cover, hook and rest, decoded forward, each frame as a still; their weighted mean
        pool.py             decoding worker processes that survive poison files
        prints.py           the prints: perceptual hashes that match a launched post back to its creative
    evidence/           what backs a prediction: look-alike past posts and where the model looked
        index.py            the evidence index: past posts, their embeddings, the kNN search for look-alikes
        gradcam.py          Grad-CAM: where the model looked (the only grad-cam import)
    model/              the exported learner file: loaded, trusted and run
        learner.py          scoring's only fastai import: load an export, read its transforms and classes
        unpickle.py         loading a learner without its notebook's labelling functions
        integrity.py        SHA-256 pins, trust on first use, for the model and the files beside it; one pin check
        fast_start.py       the fast start in state/: what a later start needs to score without fastai or PyTorch
        runtime.py          ONNX Runtime, the device, the ONNX export cache's name: no PyTorch import
        torch_runtime.py    the PyTorch runtime and the ONNX export, checked against PyTorch
    checks/             measured once per model and kept in state/: how the model may be run fast
        calibration.py      calibration images made from a seed, shared by both checks
        agreement.py        Agreement (how far answers moved), and the checks' findings kept in state/
        decode_check.py     whether JPEG draft decoding leaves one model's answers alone
        precision.py        whether ONNX Runtime's int8 copy gives the model's answers
        quantize.py         int8 quantisation of an ONNX export, in a child process
    scoring/            a batch of files into results, the same in every room
        loading.py          opening a learner: from its fast start and pinned export, or through fastai
        classifier.py       Classifier: a trusted learner + class order + runtime -> probabilities and embedding
        protocols.py        what the engine needs from the classifier, evidence, advice, Grad-CAM and the decoding pool
        frames.py           a batch's frames stacked for one pass; a video's frames combined into its one answer
        engine.py           Engine and score_items: where decoding, the classifier and the evidence meet
        assembly.py         open_engine: the classifier, its checks, evidence, advice and decoding workers
    report/             the Excel workbooks (the only openpyxl imports)
        layout.py           cells, the header row, and how each sheet prints: A4 pages, print titles, wrapped rows
        workbook.py         Ranking, Rejected, Duplicates and Model sheets, streamed (write-only mode)
        evidence_columns.py the report's evidence columns: where the model looked, look-alikes, how they did
        filmstrip.py        a video's filmstrip: about six sampled frames, each with its time and score, the hook marked
        latest_book.py      latest.xlsx: a Summary of the whole window, then the bounded sheets
    notify/             notifications through Apprise (the only apprise import)
        destinations.py     the Apprise URLs from config, urls_file or LoadCredential=, masked in logs
        queue.py            the notification queue in state/notify.sqlite, once per id and destination
        courier.py          each send in a child process, killed at notify.timeout_seconds; the cause of a failure
        sender.py           a background sender thread per destination, with retries and backoff, at most once
        notices.py          the messages: a batch's report, trouble, a refused model, a track record
    ledger/             the ledger: what was decided for each file, written by `scorer watch`, read by the others
        schema.py           the ledger's tables, and how a row becomes a result and back
        store.py            Ledger: what was scored, so a restart never rescores or loses a file
        outcome_tables.py   Launches: the likenesses, launches and track records, on the Ledger's connection
        latest_window.py    what latest.xlsx shows, read from one snapshot of the ledger
        history.py          the ledger read-only, for those who only look (the web page)
    service_units.py    the systemd units for `scorer watch` and `scorer serve`, rendered from deploy/

Rooms, one per command:

    score/              `scorer score`
        run.py              files and folders into one report, the inputs untouched
    watch/              `scorer watch`, the hot-folder service
        intake.py           watchdog events and rescans -> settled batches; the only watchdog import
        triage.py           which settled files a batch scores, and which it decides without scoring
        batch.py            HotFolder: one batch's crash-safe path through the ledger, and recovery
        disposal.py         moving decided files out of the inbox, never overwriting
        backoff.py          WriteBackoff: failed writes (reports, moves, the ledger) logged and retried
        latest_rebuild.py   latest.xlsx rebuilt in the background: coalesced, retried, finished on stop
        lease.py            the inbox lease: one inbox, one service, across state folders and hosts
        service.py          watch_inbox: the loop, the state lock, signals, reload
    web/                `scorer serve`: a page to try creatives, browse reports, read the model card; templates/
                        and static/ ship as package data
        server.py           serve_page: check the address and token, load the engine once, run uvicorn
        gate.py             what every request passes first: proxies, Host, body limits
        app.py              the FastAPI application: the engine's lifetime, errors, the login form
        state.py            Web: what every page needs (settings, engine, runs, templates)
        auth.py             the token, the login cookie, the headers every answer carries
        pages.py            the pages: Try, Reports, Model, Health and /healthz
        uploads.py          uploads read within their limits into a private folder, under generated names
        runs.py             scoring uploads off the event loop: one worker thread, a bounded queue
        views.py            what the templates show: cards, the outbox's reports, the model card, the status
        plot.py             the Model page's plot: predicted score against real engagement
    bulk/               `scorer bulk`: an archive on a Ray cluster into Parquet, on the same floors
        source.py           list folders and filesystem URIs; read one input's bytes
        shipping.py         the verified model through Ray's object store, re-verified on each worker
        stages.py           vet-and-decode CPU tasks and the inference actor
        output.py           DEST's Parquet schema, its parts, --resume and exactly-once rows
        topn.py             --report: the workbook for the top N
        pipeline.py         run_bulk: the driver that ties them together
    training/           `scorer train` and `scorer index`
        posts.py            [shared] import posts.csv and Instaloader folders
        instaloader.py      Instaloader's metadata files read as untrusted JSON, within a bound, every type checked
        labels.py           [shared] the cleaning funnel, the classes and the held-out split
        formats.py          [shared] post formats: their counts, do videos engage unlike images, labels per format
        prepare.py          posts imported, cleaned, labelled and split, or refused as too few
        frames.py           a video post's frames as training images; held-out video posts judged as scoring judges them
        fit.py              training's fastai import: fit a vision learner, export it
        evaluate.py         [shared] metrics next to the majority baseline, bootstrap intervals, the verdict
        index.py            the evidence index built from past posts, and its kNN estimate judged
        compare.py          ways of predicting compared: the index's kNN estimate, the classifier, the baseline
        ablation.py         does posting time and caption help? image alone, context alone, both
        card.py             [shared] the model card: JSON for programs, Markdown with PNG plots for people
        train.py            fit -> evaluate -> publish (export, archive, pin, index, card)
    outcomes/           `scorer outcomes` (reads posts and writes the card through training's [shared] modules)
        match.py            launched posts matched to scored creatives, one to one, by hash and embedding
        figures.py          a track record's figures: Spearman, accuracy, lift, calibration, intervals; the verdict
        run.py              import the posts, match, keep the launches in the ledger and the track record on the card
    demo.py             `scorer demo`'s generated posts and creatives
    cli/                the commands: thin, one module per kind of user
        common.py           --config and ScorerGroup: every ScorerError becomes one line and exit 2
        scoring.py          score, bulk, watch, serve
        operating.py        model pin, notify test, service
        data.py             train, index, outcomes, demo
    __main__.py         `python -m scorer` runs the CLI
    docs_reference.py   docs/configuration.md, rendered from settings.py

One creative's path from the inbox to the report, function by function as it is called, down the floors and back
up (tests/test_docs.py imports every step and fails when one no longer exists):

    watch.intake:Intake.poll               events and rescans -> a settled batch of paths
    watch.service:_run                     hands the batch to the hot folder
    watch.batch:HotFolder.process          the batch's five steps, in order
    watch.triage:Triage.split              decides what needs no scoring (duplicates, orphans, repeat crashers)
    watch.triage:Triage.identify           each path -> a Candidate (ledger.schema): size, mtime, SHA-256
    context.plan:find_plans                its plan: a sidecar or plan.csv row (a bad sidecar is rejected)
    scoring.engine:Item.planned            the Candidate with its plan, or the note that says why it has none
    watch.batch:HotFolder._score_chunks    the Candidates to the engine, in chunks
    scoring.engine:Engine.score            the engine's model, decoding workers, checks and evidence
    scoring.engine:score_items             every Candidate ends up scored, rejected or a duplicate
    decoding.pool:DecodePool.imap          each file to a decoding worker, in order, at most `ahead` waiting
    checks.decode_check:DecodeCheck.geometry  how this file is decoded (JPEG drafting, as the check allows)
    decoding.decode:decode_file            a still -> Decoded: the learner's input pixels, thumbnail, prints
    decoding.video:decode_video            or a video -> DecodedVideo: its sampled frames, each as a still's
    scoring.frames:stack                   a model batch's frames, stills' and videos', as one uint8 batch
    scoring.classifier:Classifier.predict_with_embedding  one runtime pass (fp32, or int8 where
                                           checks.precision allows it) -> probabilities, embedding
    scoring.frames:combine                 each video's frames weighed into its one answer (the hook first)
    checks.decode_check:DecodeCheck.observe  creatives decoded both ways teach the decode check
    evidence.index:EvidenceIndex.lookup    embedding -> nearest past posts, their median, the percentile
    context.advice:Advisor.advise          the same embedding + the plan -> score at the planned time, best slots
    evidence.gradcam:Explainer.overlays    Grad-CAM for the predicted class (small batches) -> Scored
    watch.batch:_entries                   each Scored, Rejected or Duplicate -> the Entry of its Candidate
    watch.batch:HotFolder._place           each Entry's destination in the archive or rejected folder
    ledger.store:Ledger.write_batch        every decision, in one transaction (ledger.schema:scored_json)
    watch.batch:HotFolder._write_report    the report, rebuilt from the ledger, never from the engine's Scored:
    ledger.store:Ledger.batch_result       the batch's rows read back (ledger.schema:scored_from_row)
    report.workbook:save_report            the BatchResult as a ReportContent -> .xlsx, atomically
    notify.notices:Notices.batch_reported  its message queued in state/notify.sqlite; sent in the background
    watch.disposal:dispose_pending         the Disposals (ledger.store:Ledger.undisposed) leave the inbox:
    watch.disposal:move                    its sidecars, then the file, to outbox/scored/<date>/ (or rejected/)
    watch.latest_rebuild:LatestRebuilder   later, off this path: latest.xlsx from the ledger (ledger.latest_window)
"""

import sys

__version__ = "0.1.0"

# torchvision imports Triton, a GPU kernel compiler, only to register kernels for torch.compile, which
# the scorer never uses: its library alone is some 75 MiB of resident memory in every process that
# loads a learner. Marked absent, as on an install without it, unless something imported it already.
sys.modules.setdefault("triton", None)  # type: ignore[arg-type]
