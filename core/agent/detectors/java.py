"""Java and Kotlin apps built with Maven or Gradle (Spring Boot recognised)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from core.agent.images import cache_paths, java_image
from core.agent.repo_files import RepoFiles, join
from core.agent.versions import java_version
from workflows.agent_models import AppDetection


@dataclass(frozen=True)
class _BuildTool:
    """One build tool's commands, `{}` standing for its launcher (the wrapper when present)."""

    name: str
    install: str
    lint: str
    test: str
    build: str
    output_directory: str
    estimated_build_seconds: int


_MAVEN = _BuildTool(
    "maven",
    install="{} -B -q dependency:go-offline",
    lint="{} -B checkstyle:check",
    test="{} -B test",
    build="{} -B package -DskipTests",
    output_directory="target",
    estimated_build_seconds=200,
)
_GRADLE = _BuildTool(
    "gradle",
    install="{} dependencies --no-daemon -q",
    lint="{} check -x test --no-daemon",
    test="{} test --no-daemon",
    build="{} build -x test --no-daemon",
    output_directory="build/libs",
    estimated_build_seconds=220,
)


class JavaDetector:
    ecosystem = "java"

    def detect(self, files: RepoFiles, base: str) -> AppDetection | None:
        pom = files.text(join(base, "pom.xml"))
        gradle_file = next(
            (g for g in ("build.gradle.kts", "build.gradle") if files.exists(join(base, g))), None
        )
        if pom is None and gradle_file is None:
            return None
        text = pom or files.text(join(base, gradle_file or "")) or ""
        spring = "spring-boot" in text or "org.springframework.boot" in text
        jdk = java_version(files, base, text)
        version_note = [f"JDK {jdk.version} from {jdk.source}"] if jdk.source else []
        if pom is not None:
            tool, language, manifest, notes = _MAVEN, "java", "pom.xml", []
            launcher = "./mvnw" if files.exists(join(base, "mvnw")) else "mvn"
            image = java_image(jdk.version, "maven", wrapper=False)
        else:
            tool, manifest, notes = _GRADLE, gradle_file or "build.gradle", list(jdk.notes)
            language = "kotlin" if gradle_file == "build.gradle.kts" else "java"
            wrapper = files.exists(join(base, "gradlew"))
            launcher = "./gradlew" if wrapper else "gradle"
            image = java_image(jdk.version, "gradle", wrapper=wrapper)
        return AppDetection(
            path=base or ".",
            name=PurePosixPath(base).name or "app",
            language=language,
            framework="spring-boot" if spring else tool.name,
            confidence=0.9,
            package_manager=tool.name,
            install_command=tool.install.format(launcher),
            lint_command=tool.lint.format(launcher) if "checkstyle" in text else None,
            test_command=tool.test.format(launcher),
            build_command=tool.build.format(launcher),
            output_directory=tool.output_directory,
            image=image,
            cache_paths=cache_paths(image, tool.name),
            has_dockerfile=files.exists(join(base, "Dockerfile")),
            estimated_build_seconds=tool.estimated_build_seconds,
            evidence=[manifest] + (["spring-boot"] if spring else []) + version_note + notes,
        )
