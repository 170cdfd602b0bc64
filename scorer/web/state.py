"""The web page's state: what every page needs, built once by the application (app.py) and read by the pages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates

from scorer.scoring.engine import Engine
from scorer.settings import Settings
from scorer.web.auth import Sessions, Throttle
from scorer.web.gate import Scope
from scorer.web.runs import Runs, ScoringPool


@dataclass
class Web:
    """What every page needs: the settings, the engine and its pool, the recent runs and the templates."""

    settings: Settings
    engine: Engine
    token: str | None
    pool: ScoringPool
    runs: Runs
    templates: Jinja2Templates
    sessions: Sessions | None
    throttle: Throttle

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> Response:
        """Render a template with what every page shows (the model's classes, whether a login is needed)."""
        context.setdefault("classes", self.engine.model.classes)
        return self.templates.TemplateResponse(request, template, {"login": self.token is not None, **context},
                                               status_code=status)

    def refusal(self, scope: Scope, status: int, message: str) -> tuple[bytes, str]:
        """The error page for a request the gate refuses before the application sees it."""
        page = self.templates.get_template("error.html").render(message=message, login=False, classes=())
        return page.encode(), "text/html; charset=utf-8"
