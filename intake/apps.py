from __future__ import annotations

from django.apps import AppConfig


class IntakeConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "intake"
    verbose_name = "Intake (people's own cases)"

    def ready(self) -> None:
        # Exchange may not import intake (the layers): intake tells it what it knows.
        from django.conf import settings

        from exchange import hooks

        from . import selectors

        hooks.register_case_source(hooks.CaseSource(submitter=settings.INTAKE_MEMBER, cases=selectors.case_tokens))
        hooks.register_figures(
            hooks.FigureSource(name="intake", title="Intake (people's own cases)", figures=selectors.period_figures)
        )
