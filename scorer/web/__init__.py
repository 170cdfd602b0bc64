"""`scorer serve`: a local web page over the same engine as `scorer score`.

    server.py    checks the settings, loads the engine once, runs uvicorn
    app.py       the FastAPI application: pages, the error page, the login form, the engine's lifetime
    gate.py      before any body is read: trusted proxies, the Host check, body limits, upload slots
    auth.py      the token and its rule, expiring login cookies, throttled logins, CSRF, security headers
    uploads.py   reading an upload within its limits into a private folder under generated names
    runs.py      scoring uploads on one worker thread off the event loop, and the recent results
    views.py     what the templates show: creative cards, the reports in outbox/, the model card
    plot.py      the Model page's scatter plot of the track record, as inline SVG
    templates/   Jinja2 pages; partials/creative_card.html and partials/model_card.html are the
                 one place each card is drawn
    static/      the style sheet and the drop-zone script
"""
