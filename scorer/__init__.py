"""Rank social-media creatives by predicted engagement with a fastai vision learner.

The map: every module in a line. Each room serves one use case; the shared floors sit below them.
tests/test_docs.py fails when a module under scorer/ is missing here.

    scoring/            `scorer score` and the engine under every room
        score.py            `scorer score`: files and folders into one report, the inputs untouched
        vet.py              what is ignored, read and opened (before any pixel is decoded)
        decode.py           decoding into the learner's input pixels; fastai's Resize, reproduced
        decode_pool.py      decoding worker processes that survive poison files
        decode_check.py     whether JPEG draft decoding leaves one model's answers alone, once per model
        learner.py          the only fastai import: load an export, read its transforms, fit and export
        unpickle.py         loading a learner without its notebook's labelling functions
        integrity.py        SHA-256 pins, trust on first use
        runtime.py          ONNX Runtime and PyTorch runtimes, the ONNX export cache
        precision.py        whether ONNX Runtime's int8 copy gives the model's answers, once per model
        quantize.py         int8 quantisation of an ONNX export, in a child process
        model.py            the classifier: a verified learner + class order + runtime -> probabilities
        engine.py           score a batch: where decoding, the model and the results meet
        evidence.py         the evidence index: past posts, their embeddings, the kNN search for look-alikes
        explain.py          Grad-CAM: where the model looked (the only grad-cam import)
        fingerprint.py      the perceptual hashes that match a launched post back to its creative
    watch/              `scorer watch`, the hot-folder service
        intake.py           watchdog events and rescans -> settled batches; the only watchdog import
        batch.py            one batch's crash-safe path through the ledger, and recovery
        ledger.py           the SQLite ledger: what was scored, so a restart never rescores or loses a file
        schema.py           the ledger's tables, and how a row becomes a result and back
        disposal.py         moving decided files out of the inbox, never overwriting
        window.py           what latest.xlsx shows, read from one snapshot of the ledger
        latest.py           latest.xlsx rebuilt in the background: coalesced, retried, finished on stop
        trouble.py          failed writes (reports, latest.xlsx, moves, the ledger): logged, retried with backoff
        lease.py            the inbox lease: one inbox, one service, across state folders and hosts
        service.py          the watch loop, the state lock, signals, reload
        systemd.py          sd_notify and the units for `scorer watch` and `scorer serve`, rendered from deploy/
    training/           `scorer train` and `scorer index`
        posts.py            import posts.csv and Instaloader folders
        labels.py           the cleaning funnel, the classes and the held-out split
        prepare.py          posts imported, cleaned, labelled and split, or refused as too few
        evaluate.py         metrics next to the majority baseline, bootstrap intervals, the verdict
        index.py            the evidence index built from past posts, and its kNN estimate judged
        compare.py          ways of predicting compared: the index's kNN estimate, the classifier, the baseline
        ablation.py         does posting time and caption help? image alone, context alone, both
        card.py             the model card: JSON for programs, Markdown with PNG plots for people
        train.py            import -> clean -> label -> fit -> evaluate -> export, card and pin
    context/            posting time and caption beside the image
        features.py         the context features, derived alike from past posts and a planned post
        model.py            the combined model: logistic regression on the embedding and the context
        plan.py             a creative's plan: a sidecar <name>.txt / <name>.json, or a plan.csv row
        advice.py           the Engagement score at the planned time, and the best slots of the coming week
    outcomes/           `scorer outcomes`
        match.py            launched posts matched to scored creatives, one to one, by hash and features
        record.py           the track record: Spearman, accuracy, lift, calibration, intervals, the verdict
        run.py              import the posts, match, record in the ledger and the model card
    web/                `scorer serve`: a page to try creatives, browse reports, read the model card; templates/
                        and static/ ship as package data
        server.py           check the address and token, load the engine once, run uvicorn
        gate.py             what every request passes first: proxies, Host, body limits
        app.py              the FastAPI application: the engine's lifetime, templates, errors, the login form
        auth.py             the token, the login cookie, the headers every answer carries
        pages.py            the pages: Try, Reports, Model, Health and /healthz
        uploads.py          uploads read within their limits into a private folder, under generated names
        runs.py             scoring uploads off the event loop: one worker thread, a bounded queue
        views.py            what the templates show: cards, the outbox's reports, the model card, the status
        plot.py             the Model page's plot: predicted score against real engagement
    report/             the Excel workbooks (the only openpyxl imports)
        workbook.py         Ranking, Rejected, Duplicates and Model sheets, streamed (write-only mode)
        evidence.py         the report's evidence columns: where the model looked, look-alikes, how they did
        latest_book.py      latest.xlsx: a Summary of the whole window, then the bounded sheets
    notify/             notifications through Apprise (the only apprise import)
        destinations.py     the Apprise URLs from config, urls_file or LoadCredential=, masked in logs
        outbox.py           the durable message queue in state/notify.sqlite, once per id and destination
        sender.py           a background sender thread per destination, with retries and backoff
        notices.py          the messages: a batch's report, trouble, a refused model, a track record
    bulk/               `scorer bulk`: an archive on a Ray cluster into Parquet, on the same scoring/ code
        source.py           list folders and filesystem URIs; read one input's bytes
        shipping.py         the verified model through Ray's object store, re-verified on each worker
        stages.py           vet-and-decode CPU tasks and the inference actor
        output.py           DEST's Parquet schema, its parts, --resume and exactly-once rows
        topn.py             --report: the workbook for the top N
        pipeline.py         run_bulk: the driver that ties them together
    cli.py              thin commands; ScorerGroup turns every ScorerError into one line and exit 2
    __main__.py         `python -m scorer` runs the CLI
    console.py          logging set-up, progress bars, the live status line and printed summaries (rich)
    demo.py             `scorer demo`'s generated posts and creatives
    config.py           reads config.yaml over settings.py's typed defaults; the only YAML reader
    settings.py         typed settings: every key, its default and its documentation
    docs_reference.py   docs/configuration.md, rendered from settings.py
    errors.py           the ScorerError tree
    results.py          what scoring produces: plain data shared by every room
    fsutil.py           atomic write, free name, safe open, SHA-256: each idiom written once
    textsafe.py         untrusted text made safe for spreadsheets
    sqlitetx.py         the one immediate transaction the SQLite stores (ledger, notification outbox) write in
    memory.py           gives freed memory back, so a long-running process stays at its working size

One creative's path from the inbox to the report, going down the floors:

    watch.intake:Intake.poll               events and rescans -> a settled batch of paths
    watch.service:_run                     hands the batch to the hot folder
    watch.batch:HotFolder.process          fingerprints each path into a Candidate (watch.schema), with its plan
                                           (context.plan: a sidecar or plan.csv row; a bad sidecar is rejected)
    scoring.engine:score_items             scoring.decode_pool -> scoring.decode:decode_file -> Decoded
    scoring.model:Classifier.predict_with_features  batch transforms + one runtime pass (fp32, or int8 where
                                           scoring.precision allows it) -> probs, features
    scoring.evidence:EvidenceIndex.lookup  features -> nearest past posts, their median, the percentile
    context.advice:Planner.advise          the same features + the plan -> score at the planned time, best slots
    scoring.explain:Explainer.overlays     Grad-CAM for the predicted class (small batches) -> Scored
    watch.ledger:Ledger.record_batch       every outcome as an Entry, in one transaction
    report.workbook:save_report            the batch's BatchResult as a ReportContent -> .xlsx
    notify.notices:Notices.batch_reported  its message queued in state/notify.sqlite; sent in the background
    watch.disposal:dispose_pending         its sidecar, then the file, move to outbox/scored/<date>/ (or rejected/)
    watch.latest:LatestRebuilder           later, off this path: latest.xlsx from the ledger (watch.window)
"""

__version__ = "0.1.0"
