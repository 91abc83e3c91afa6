"""Which models exist on this node and which tier may use each."""

from __future__ import annotations

from kintsugi_rt.settings import TIERS, ModelSpec, Settings

OFFLINE_DEMO = ModelSpec(
    id="offline-demo",
    label="Offline demo (no provider configured)",
    context_window=8192,
    max_output=256,
    tiers=TIERS,
)


class Catalogue:
    def __init__(self, settings: Settings) -> None:
        if settings.openai_api_key:
            self.provider = "openai"
            self.models = {m.id: m for m in settings.chat_models}
            self.default: str | None = settings.chat_default_model
        elif settings.is_production:
            self.provider = "off"
            self.models = {}
            self.default = None
        else:
            self.provider = "offline-demo"
            self.models = {OFFLINE_DEMO.id: OFFLINE_DEMO}
            self.default = OFFLINE_DEMO.id
        self.max_output_tokens = settings.chat_max_output_tokens

    def models_for(self, tier: str) -> list[str]:
        """The ids of the models ``tier`` may use (``GET /api/billing/plans``)."""
        return [model.id for model in self.models.values() if tier in model.tiers]

    def get(self, model_id: str) -> ModelSpec | None:
        return self.models.get(model_id)

    def output_budget(self, model: ModelSpec) -> int:
        """The ``max_tokens`` of one request: the setting, capped by the model."""
        return min(self.max_output_tokens, model.max_output)

    @staticmethod
    def lowest_tier(model: ModelSpec) -> str:
        return next(t for t in TIERS if t in model.tiers)
