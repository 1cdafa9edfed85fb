"""What a caller may write about projects, repositories and environments, validated, and the
masked view of a stored project configuration.

Input models forbid unknown fields, so `organization_id`, ids, hashes or statuses the caller
does not own can never be mass-assigned.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from db.app_hosts import is_hostname
from db.models.projects import (
    DEPLOY_PROVIDERS,
    ENVIRONMENT_TYPES,
    FRAMEWORKS,
    PROJECT_TYPES,
)
from forgeline.statuses.projects import SETTABLE_PROJECT_STATUSES
from infra.site_rules import InvalidSiteRule, source_regex

MASK = "********"
SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{1,61})[a-z0-9]$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
HEADER_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$"
VERSION_PATTERN = r"^(lts|latest|\d{1,3}(\.\d{1,4}){0,2}(\.x)?)$"
ENVIRONMENT_NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9._-]{0,98}[a-z0-9])?$"

ProjectType = Literal["static_site", "ssr_app", "spa", "api", "fullstack"]
EnvironmentType = Literal["development", "staging", "production", "preview"]
RepositoryProvider = Literal["github", "gitlab", "bitbucket", "git", "local"]
# Statuses a caller may set directly; archive/unarchive and failed_setup have their own paths.
SettableProjectStatus = Literal["active", "paused"]
assert set(SettableProjectStatus.__args__) == set(SETTABLE_PROJECT_STATUSES)  # type: ignore[attr-defined]

assert set(ProjectType.__args__) == set(PROJECT_TYPES)  # type: ignore[attr-defined]
assert set(EnvironmentType.__args__) == set(ENVIRONMENT_TYPES)  # type: ignore[attr-defined]


def storable_text(value: str) -> str:
    """Postgres text and JSONB cannot hold NUL, and unpaired surrogates do not encode as UTF-8:
    refuse both here (422) rather than fail at the driver (500)."""
    if "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text must be valid Unicode (no unpaired surrogates)") from exc
    return value


def _check_storable(value: Any, depth: int = 0) -> None:
    if depth > 32:
        raise ValueError("input is nested too deeply")
    if isinstance(value, str):
        storable_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_storable(key, depth + 1)
            _check_storable(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_storable(item, depth + 1)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        _check_storable(data)
        return data


def _printable(value: str) -> str:
    if any(ord(ch) < 0x20 and ch not in "\t" for ch in value) or "\x7f" in value:
        raise ValueError("control characters are not allowed")
    return value


def _relative_path(value: str) -> str:
    if value.startswith(("/", "~")) or "\\" in value:
        raise ValueError("must be a path relative to the repository root")
    if any(part == ".." for part in value.split("/")):
        raise ValueError("must not contain '..'")
    return value


Command = Annotated[
    str, StringConstraints(min_length=1, max_length=2000), AfterValidator(_printable)
]
RelativePath = Annotated[
    str,
    StringConstraints(min_length=1, max_length=500, pattern=r"^[^\x00-\x1f\x7f]+$"),
    AfterValidator(_relative_path),
]
UrlPath = Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=r"^/[^\s]*$")]


def _source_pattern(value: str) -> str:
    try:
        source_regex(value)
    except InvalidSiteRule as exc:
        raise ValueError(str(exc)) from exc
    return value


# A rule's source: `:name`, `:name*`, `(regex)` and `*` as in Vercel's and Netlify's rules.
SourcePattern = Annotated[UrlPath, AfterValidator(_source_pattern)]
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=255),
    AfterValidator(_printable),
]
Framework = Annotated[str, StringConstraints(max_length=100)]
# Free-text query parameters (search, filters) go into SQL parameters: same storability rule.
QueryText = Annotated[str, AfterValidator(storable_text)]


def _check_framework(value: str | None) -> str | None:
    if value is not None and value not in FRAMEWORKS:
        raise ValueError(f"unknown framework; one of: {', '.join(FRAMEWORKS)}")
    return value


# --------------------------------------------------------------------------- config blocks


class EnvironmentVariable(StrictModel):
    """Stored on write; a secret value is encrypted at rest and answered as a mask."""

    name: Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN)]
    value: Annotated[str, StringConstraints(max_length=32_768)]
    secret: bool = False


class EnvironmentVariableOut(BaseModel):
    name: str
    value: str
    secret: bool


def _unique_names(items: list[EnvironmentVariable]) -> list[EnvironmentVariable]:
    names = [item.name for item in items]
    if len(names) != len(set(names)):
        raise ValueError("environment variable names must be unique")
    return items


EnvironmentVariables = Annotated[
    list[EnvironmentVariable], Field(max_length=200), AfterValidator(_unique_names)
]


class HeaderRule(StrictModel):
    source: SourcePattern
    headers: Annotated[
        dict[str, Annotated[str, StringConstraints(max_length=4096)]],
        Field(min_length=1, max_length=50),
    ]

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header_value in value.items():
            if not re.match(HEADER_NAME_PATTERN, name):
                raise ValueError(f"invalid header name {name!r}")
            if "\r" in header_value or "\n" in header_value:
                raise ValueError("header values must not contain line breaks")
        return value


class RewriteRule(StrictModel):
    source: SourcePattern
    destination: UrlPath


class RedirectRule(StrictModel):
    source: SourcePattern
    destination: Annotated[
        str, StringConstraints(min_length=1, max_length=2000, pattern=r"^(/|https://)[^\s]*$")
    ]
    status_code: Literal[301, 302, 307, 308] = 308


class ProjectConfig(StrictModel):
    """Build and serve settings of a project (everything optional; the agent fills gaps).
    The generator builds the app at `root_directory` with these commands and runtime
    versions; the runner works in `root_directory` for stages that name no directory."""

    root_directory: RelativePath | None = None
    install_command: Command | None = None
    build_command: Command | None = None
    test_command: Command | None = None
    output_directory: RelativePath | None = None
    node_version: Annotated[str, StringConstraints(pattern=VERSION_PATTERN)] | None = None
    python_version: Annotated[str, StringConstraints(pattern=VERSION_PATTERN)] | None = None
    environment_variables: EnvironmentVariables = Field(default_factory=list)
    headers: Annotated[list[HeaderRule], Field(max_length=100)] = Field(default_factory=list)
    rewrites: Annotated[list[RewriteRule], Field(max_length=100)] = Field(default_factory=list)
    redirects: Annotated[list[RedirectRule], Field(max_length=100)] = Field(default_factory=list)


class ProjectConfigOut(BaseModel):
    root_directory: str | None = None
    install_command: str | None = None
    build_command: str | None = None
    test_command: str | None = None
    output_directory: str | None = None
    node_version: str | None = None
    python_version: str | None = None
    environment_variables: list[EnvironmentVariableOut] = Field(default_factory=list)
    headers: list[dict[str, Any]] = Field(default_factory=list)
    rewrites: list[dict[str, Any]] = Field(default_factory=list)
    redirects: list[dict[str, Any]] = Field(default_factory=list)


# --------------------------------------------------------------------------- projects


class ProjectCreate(StrictModel):
    name: Name
    slug: Slug | None = None
    description: Annotated[str, StringConstraints(max_length=5000)] | None = None
    project_type: ProjectType
    framework: Annotated[Framework | None, AfterValidator(_check_framework)] = None
    config: ProjectConfig = Field(default_factory=ProjectConfig)


class ProjectUpdate(StrictModel):
    """PATCH: only the fields present change. `config` replaces the whole config; a secret
    variable sent back with the mask keeps its stored value."""

    name: Name | None = None
    slug: Slug | None = None
    description: Annotated[str, StringConstraints(max_length=5000)] | None = None
    project_type: ProjectType | None = None
    framework: Annotated[Framework | None, AfterValidator(_check_framework)] = None
    status: SettableProjectStatus | None = None
    config: ProjectConfig | None = None

    @model_validator(mode="after")
    def _not_null(self) -> ProjectUpdate:
        for name in ("name", "slug", "project_type", "status", "config"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


# --------------------------------------------------------------------------- repositories

# git check-ref-format rules plus a refusal of anything a shell could read specially.
_BRANCH_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\$`;&|<>()'\"!{}#]")


def _check_branch(value: str) -> str:
    if _BRANCH_FORBIDDEN.search(value):
        raise ValueError("branch contains a character git or a shell would not accept")
    if value.startswith(("-", "/")) or value.endswith(("/", ".", ".lock")):
        raise ValueError("branch must not start with '-' or '/' nor end with '/', '.', '.lock'")
    if ".." in value or "//" in value or "@{" in value or value == "@":
        raise ValueError("branch must not contain '..', '//' or '@{'")
    if any(part.startswith(".") or part.endswith(".lock") for part in value.split("/")):
        raise ValueError("branch components must not start with '.' or end with '.lock'")
    return value


Branch = Annotated[
    str, StringConstraints(min_length=1, max_length=255), AfterValidator(_check_branch)
]


class RepositoryPut(StrictModel):
    provider: RepositoryProvider
    url: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    default_branch: Branch = "main"
    # Write-only; omitted on a PUT that updates an existing repository keeps the stored token,
    # an explicit null removes it.
    access_token: Annotated[SecretStr, Field(max_length=4096)] | None = None


# --------------------------------------------------------------------------- environments


def _custom_domain(value: str) -> str:
    host = value.strip().lower().rstrip(".")
    if not is_hostname(host):
        raise ValueError("not a host name (letters, digits, hyphens; two labels or more)")
    return host


CustomDomain = Annotated[str, StringConstraints(max_length=253), AfterValidator(_custom_domain)]


class _ProviderConfig(StrictModel):
    custom_domain: (
        Annotated[
            str, StringConstraints(max_length=253, pattern=r"^[a-z0-9][a-z0-9.-]*\.[a-z]{2,63}$")
        ]
        | None
    ) = None
    environment_variables: EnvironmentVariables = Field(default_factory=list)
    # Custom domains served by the environment's route (Docker), each claimed by one environment.
    domains: Annotated[list[CustomDomain], Field(max_length=20)] = Field(default_factory=list)


class DockerConfig(_ProviderConfig):
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    health_check_path: UrlPath = "/"
    healthy_threshold: Annotated[int, Field(ge=1, le=20)] = 2
    health_check_timeout_seconds: Annotated[int, Field(ge=1, le=600)] = 60


class StaticConfig(_ProviderConfig):
    pass


class AwsConfig(_ProviderConfig):
    # S3 bucket naming rules (3-63, lowercase, digits, dots, hyphens; not an IP address).
    bucket_name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    region: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d{1,2}$")]

    @field_validator("bucket_name")
    @classmethod
    def _not_ip_like(cls, value: str) -> str:
        if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", value) or ".." in value:
            raise ValueError("bucket name must not look like an IP address or contain '..'")
        return value


class HostedConfig(_ProviderConfig):
    """Providers Forgeline records but does not deploy to itself (deployments refuse them)."""

    provider_project_id: Annotated[str, StringConstraints(max_length=255)] | None = None
    region: Annotated[str, StringConstraints(max_length=64)] | None = None


PROVIDER_CONFIGS: dict[str, type[_ProviderConfig]] = {
    "docker": DockerConfig,
    "static": StaticConfig,
    "aws": AwsConfig,
    **{p: HostedConfig for p in DEPLOY_PROVIDERS if p not in ("docker", "static", "aws")},
}
EnvironmentProvider = Annotated[str, StringConstraints(max_length=50)]


def _check_provider(value: str) -> str:
    if value not in PROVIDER_CONFIGS:
        raise ValueError(f"unknown provider; one of: {', '.join(PROVIDER_CONFIGS)}")
    return value


class _EnvironmentFields(StrictModel):
    is_protected: bool | None = None
    required_approvals: Annotated[int, Field(ge=0, le=10)] | None = None
    auto_deploy: bool | None = None
    # Raw dict here; validated against the provider's schema in the service, where the
    # provider (possibly unchanged on PATCH) is known.
    config: dict[str, Any] | None = None


class EnvironmentCreate(_EnvironmentFields):
    name: Annotated[str, StringConstraints(pattern=ENVIRONMENT_NAME_PATTERN)]
    env_type: EnvironmentType
    provider: Annotated[EnvironmentProvider, AfterValidator(_check_provider)]


class EnvironmentUpdate(_EnvironmentFields):
    name: Annotated[str, StringConstraints(pattern=ENVIRONMENT_NAME_PATTERN)] | None = None
    env_type: EnvironmentType | None = None
    provider: Annotated[EnvironmentProvider, AfterValidator(_check_provider)] | None = None

    @model_validator(mode="after")
    def _not_null(self) -> EnvironmentUpdate:
        for name in ("name", "env_type", "provider", "config", "is_protected"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self
