"""/v1/styles and /v1/platforms: what a job may ask for, and each platform's rules."""

from __future__ import annotations

from fastapi import APIRouter

from producers.api.deps import ReadTenant
from schemas.api import PlatformCatalogue, PlatformPublic, StyleCatalogue, StylePublic
from schemas.platforms import PLATFORMS, RULES_VERSION
from schemas.styles import STYLES

router = APIRouter(prefix="/v1", tags=["catalogue"])


@router.get("/styles", response_model=StyleCatalogue)
def styles(_: ReadTenant) -> StyleCatalogue:
    """The styles a job may name; each variant's provenance records ``name@version``."""
    return StyleCatalogue(
        styles=[
            StylePublic(name=s.name, version=s.version, description=s.description)
            for s in sorted(STYLES.values(), key=lambda s: s.name)
        ]
    )


@router.get("/platforms", response_model=PlatformCatalogue)
def platforms(_: ReadTenant) -> PlatformCatalogue:
    """The platforms a job may name and the rules every variant for them obeys."""
    return PlatformCatalogue(
        rules_version=RULES_VERSION,
        platforms=[
            PlatformPublic(
                name=p.name,
                label=p.label,
                max_chars=p.max_chars,
                limit_kind=p.limit_kind,
                counting=p.counting,
                max_hashtags=p.max_hashtags,
                allow_emoji=p.allow_emoji,
                allow_hash=p.allow_hash,
            )
            for p in sorted(PLATFORMS.values(), key=lambda p: p.name)
        ],
    )
