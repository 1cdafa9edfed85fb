"""Ruby apps (Gemfile; Rails recognised)."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from core.agent.images import cache_paths, ruby_image
from core.agent.repo_files import RepoFiles, join
from core.agent.versions import ruby_version
from workflows.agent_models import AppDetection


class RubyDetector:
    ecosystem = "ruby"

    def detect(self, files: RepoFiles, base: str) -> AppDetection | None:
        gemfile = files.text(join(base, "Gemfile"))
        if gemfile is None:
            return None
        gems = set(re.findall(r"^\s*gem\s+['\"]([^'\"]+)['\"]", gemfile, re.M))
        rails = "rails" in gems or files.exists(join(base, "config/application.rb"))
        version = ruby_version(files, base, gemfile)
        image = ruby_image(version.version)
        rspec = "rspec-rails" in gems or "rspec" in gems or files.is_dir(join(base, "spec"))
        test = "bundle exec rspec" if rspec else ("bundle exec rails test" if rails else None)
        return AppDetection(
            path=base or ".",
            name=PurePosixPath(base).name or "app",
            language="ruby",
            framework="rails" if rails else "ruby",
            confidence=0.95 if "rails" in gems else (0.75 if rails else 0.6),
            package_manager="bundler",
            install_command="bundle install --jobs 4",
            lint_command="bundle exec rubocop"
            if "rubocop" in gems or any(g.startswith("rubocop") for g in gems)
            else None,
            test_command=test,
            build_command="bundle exec rails assets:precompile" if rails else None,
            output_directory="public/assets" if rails else None,
            image=image,
            cache_paths=cache_paths(image, "bundler"),
            has_dockerfile=files.exists(join(base, "Dockerfile")),
            estimated_build_seconds=150 if rails else 60,
            evidence=["Gemfile"]
            + (["gem rails"] if "rails" in gems else [])
            + ([f"Ruby {version.version} from {version.source}"] if version.source else []),
        )
