"""The models' settings, a part of ``WorkerSettings`` (``schemas.settings``): which model
plays each role (captioner, copywriter, CLIP scorer), where its weights come from, and,
for a role answered by an OpenAI-compatible server (vLLM in production), that server.
Evaluation runs read the same fields. With ``schemas.settings``, the only modules that
read the environment.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ModelSettings(BaseSettings):
    """The model roles of a worker process."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    captioner_model: str = Field(
        default="Salesforce/blip-image-captioning-base",
        description="Hub id or local folder of the captioning model",
    )
    captioner_revision: str | None = None
    noop_model_s: float | None = Field(
        default=None,
        ge=0,
        le=60,
        description="Seconds each call of the captionq/noop model takes (sleeping): a "
        "stand-in for model time in benchmarks and fault tests; unset, none",
    )
    copywriter_model: str | None = Field(
        default=None, description="Optional instruct LM (hub id or folder) that writes variants"
    )
    copywriter_revision: str | None = None
    copy_max_new_tokens: int = Field(default=60, ge=1, le=1024, description="Rewriter output")
    clip_model: str | None = Field(
        default=None, description="CLIP (hub id or folder) for image-text agreement in scores"
    )
    clip_revision: str | None = None
    # Served models (worker/models/served.py): a role answered by an OpenAI-compatible
    # server (vLLM in production) instead of weights loaded in this process.
    captioner_backend: Literal["inprocess", "served"] = Field(
        default="inprocess",
        description="served: CAPTIONER_MODEL is answered by the server at CAPTIONER_BASE_URL",
    )
    captioner_base_url: str | None = Field(
        default=None, description="The captioner's server, up to /v1 (http://vllm:8000/v1)"
    )
    captioner_api_key: str | None = Field(default=None, description="Bearer key of that server")
    captioner_served_model: str | None = Field(
        default=None, description="The model name the server serves (unset: CAPTIONER_MODEL)"
    )
    copywriter_backend: Literal["inprocess", "served"] = "inprocess"
    copywriter_base_url: str | None = None
    copywriter_api_key: str | None = None
    copywriter_served_model: str | None = None
    served_max_in_flight: int = Field(
        default=16, ge=1, le=1024,
        description="Requests one worker process keeps in flight to a model server, at most",
    )
    served_timeout_s: float = Field(
        default=60.0, gt=0, description="Deadline of one request to a model server"
    )
    served_structured_output: bool = Field(
        default=False,
        description="Ask for each image and style's variants in one request, as a JSON "
        "list by schema (response_format; vLLM honours it); the tolerant parser keeps the "
        "usable ones and the missing ones are asked for one per variant",
    )
    offline: bool = Field(default=False, description="Load models from local files only")
    model_device: str = Field(default="auto", description="auto, cpu, cuda, cuda:N")
    model_dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    max_new_tokens: int = Field(default=40, ge=1, le=512)
    num_beams: int = Field(default=1, ge=1, le=16)

    @model_validator(mode="after")
    def _served_roles_have_a_server(self) -> ModelSettings:
        for role in ("captioner", "copywriter"):
            if getattr(self, f"{role}_backend") == "served":
                if not getattr(self, f"{role}_base_url"):
                    raise ValueError(f"{role.upper()}_BACKEND=served needs {role.upper()}_BASE_URL")
                if not (getattr(self, f"{role}_served_model") or getattr(self, f"{role}_model")):
                    raise ValueError(f"{role.upper()}_BACKEND=served needs {role.upper()}_MODEL")
        return self
