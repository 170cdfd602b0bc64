"""Rank social-media creatives by predicted engagement with a fastai vision learner.

The map. Each room serves one use case; the shared floors sit below them.

    scoring/    `scorer score` and the engine under every room: vet, decode, decode pool, the learner,
                runtimes, the model and its integrity, the decode and precision checks (int8 made by
                quantize in a child process), the evidence index and Grad-CAM (explain), the
                perceptual hashes that match a launched post back (fingerprint)
    watch/      `scorer watch`: intake, one crash-safe batch, the ledger, disposal, failed-write retries, the
                inbox lease, the service loop, systemd
    training/   `scorer train` and `scorer index`: posts import, labels, evaluation, the evidence index,
                ways of predicting compared, the context ablation, the model card
    context/    posting time and caption: features, the combined model, sidecars and plan.csv, advice
    outcomes/   `scorer outcomes`: launched posts matched back to scored creatives (match), the track
                record and its verdict (record), the command's library function (run)
    web/        `scorer serve`: a local page to try creatives, browse reports and the model card
    report/     the Excel workbooks, batch reports and latest.xlsx (the only openpyxl imports)
    notify/     notifications through Apprise (the only apprise import): destinations and their secrets,
                the durable outbox in state/, a sender thread per destination, the messages
    bulk/       `scorer bulk`: an archive on a Ray cluster into Parquet, on the same scoring/ code
    cli.py      thin commands; console.py prints for them; demo.py makes the demo's data
    config.py   reads config.yaml over settings.py's typed defaults; errors.py is the ScorerError tree
    results.py  what scoring produces; fsutil.py and textsafe.py hold each file and text idiom once;
                memory.py gives freed memory back

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
