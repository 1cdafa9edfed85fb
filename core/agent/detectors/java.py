"""Java and Kotlin apps built with Maven or Gradle (Spring Boot recognised)."""

from __future__ import annotations

from pathlib import PurePosixPath

from core.agent.images import cache_paths, java_image
from core.agent.repo_files import RepoFiles, join
from core.agent.versions import java_version
from workflows.agent_models import AppDetection


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
            mvn = "./mvnw" if files.exists(join(base, "mvnw")) else "mvn"
            image = java_image(jdk.version, "maven", wrapper=False)
            return AppDetection(
                path=base or ".",
                name=PurePosixPath(base).name or "app",
                language="java",
                framework="spring-boot" if spring else "maven",
                confidence=0.9,
                package_manager="maven",
                install_command=f"{mvn} -B -q dependency:go-offline",
                lint_command=f"{mvn} -B checkstyle:check" if "checkstyle" in text else None,
                test_command=f"{mvn} -B test",
                build_command=f"{mvn} -B package -DskipTests",
                output_directory="target",
                image=image,
                cache_paths=cache_paths(image, "maven"),
                has_dockerfile=files.exists(join(base, "Dockerfile")),
                estimated_build_seconds=200,
                evidence=["pom.xml"] + (["spring-boot"] if spring else []) + version_note,
            )
        wrapper = files.exists(join(base, "gradlew"))
        gradle = "./gradlew" if wrapper else "gradle"
        image = java_image(jdk.version, "gradle", wrapper=wrapper)
        return AppDetection(
            path=base or ".",
            name=PurePosixPath(base).name or "app",
            language="kotlin" if gradle_file == "build.gradle.kts" else "java",
            framework="spring-boot" if spring else "gradle",
            confidence=0.9,
            package_manager="gradle",
            install_command=f"{gradle} dependencies --no-daemon -q",
            lint_command=f"{gradle} check -x test --no-daemon" if "checkstyle" in text else None,
            test_command=f"{gradle} test --no-daemon",
            build_command=f"{gradle} build -x test --no-daemon",
            output_directory="build/libs",
            image=image,
            cache_paths=cache_paths(image, "gradle"),
            has_dockerfile=files.exists(join(base, "Dockerfile")),
            estimated_build_seconds=220,
            evidence=[gradle_file or "build.gradle"]
            + (["spring-boot"] if spring else [])
            + version_note
            + list(jdk.notes),
        )
