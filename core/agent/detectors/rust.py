"""Rust crates (Cargo.toml, Cargo.lock)."""

from __future__ import annotations

from pathlib import PurePosixPath

from core.agent.images import cache_paths, rust_image
from core.agent.repo_files import RepoFiles, join
from core.agent.versions import rust_toolchain
from workflows.agent_models import AppDetection


class RustDetector:
    ecosystem = "rust"

    def detect(self, files: RepoFiles, base: str) -> AppDetection | None:
        cargo = files.toml(join(base, "Cargo.toml"))
        if cargo is None:
            return None
        locked = files.exists(join(base, "Cargo.lock"))
        flag = " --locked" if locked else ""
        toolchain = rust_toolchain(files, base)
        image = rust_image(toolchain.version)
        name = str((cargo.get("package") or {}).get("name") or PurePosixPath(base).name or "app")
        return AppDetection(
            path=base or ".",
            name=name,
            language="rust",
            framework="rust",
            confidence=0.95,
            package_manager="cargo",
            install_command=f"cargo fetch{flag}",
            # The images install rustup's minimal profile: clippy is a component to add.
            lint_command="rustup component add clippy && cargo clippy --all-targets -- -D warnings",
            test_command=f"cargo test{flag}",
            build_command=f"cargo build --release{flag}",
            output_directory="target/release",
            image=image,
            cache_paths=[*cache_paths(image, "cargo"), "target"],
            has_dockerfile=files.exists(join(base, "Dockerfile")),
            estimated_build_seconds=240,
            evidence=["Cargo.toml"]
            + (["Cargo.lock"] if locked else [])
            + ([f"Rust {toolchain.version} from {toolchain.source}"] if toolchain.source else []),
        )
