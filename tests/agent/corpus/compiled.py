"""Go, Rust and JVM (Maven, Gradle) services."""

from __future__ import annotations

from tests.agent.corpus.sample import SampleRepo

COMPILED: tuple[SampleRepo, ...] = (
    SampleRepo(
        "go-service",
        "go",
        {
            "go.mod": "module example.com/acme/svc\n\ngo 1.22\n",
            "go.sum": "",
            "main.go": "package main\n",
        },
        package_manager="go modules",
        output_directory="bin",
    ),
    SampleRepo(
        "rust-cli",
        "rust",
        {
            "Cargo.toml": '[package]\nname = "tool"\nversion = "0.1.0"\n',
            "Cargo.lock": "",
            "src/main.rs": "",
        },
        package_manager="cargo",
        output_directory="target/release",
    ),
    SampleRepo(
        "java-maven",
        "spring-boot",
        {
            "pom.xml": "<project><parent><artifactId>spring-boot-starter-parent</artifactId>"
            "</parent></project>"
        },
        package_manager="maven",
        output_directory="target",
    ),
    SampleRepo(
        "java-gradle",
        "gradle",
        {
            "build.gradle": "plugins { id 'java' }\n",
            "gradlew": "#!/bin/sh\n",
            "settings.gradle": "",
        },
        package_manager="gradle",
        output_directory="build/libs",
    ),
)
