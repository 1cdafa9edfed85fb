"""The log lines that say whose fault a failed stage was: one table of patterns per failure class,
drawn from the messages package managers, test runners, compilers and shells really print."""

from __future__ import annotations

import re
from dataclasses import dataclass

from forgeline.statuses.runs import FailureClass


@dataclass(frozen=True)
class FailurePattern:
    failure_class: FailureClass
    cause: str
    pattern: re.Pattern[str]


def _rule(failure_class: FailureClass, cause: str, *alternatives: str) -> FailurePattern:
    # Linear patterns only (no nested quantifiers): a hostile line costs its length, no more.
    return FailurePattern(failure_class, cause, re.compile("|".join(alternatives)))


MISSING_SCRIPT = "the stage runs a package.json script that does not exist"
TESTS_FAILED = "the repository's tests failed"
# Causes that end their command at once: a test run's report after such a line means the line
# was the tests' own output (core/runs/failure_classes.py).
ENDS_ITS_COMMAND = (MISSING_SCRIPT,)

INFRA = FailureClass.INFRASTRUCTURE
FLAKY = FailureClass.FLAKY
CODE = FailureClass.CODE
CONFIG = FailureClass.CONFIG

# Within a class, the first pattern that matches names the cause. Across classes the order of
# CLASS_PRECEDENCE decides: a missing tool explains the test failures it causes, a registry
# outage explains the missing packages it causes.
PATTERNS: tuple[FailurePattern, ...] = (
    # -- config: the pipeline's fault ---------------------------------------------------------
    _rule(
        CONFIG,
        MISSING_SCRIPT,
        r"npm (?:ERR!|error) Missing script",
        r"error Command \"[^\"]{1,200}\" not found",
        r"ERR_PNPM_NO_SCRIPT",
        r"ERR_PNPM_RECURSIVE_RUN_NO_SCRIPT",
    ),
    _rule(
        CONFIG,
        "the lockfile is out of sync with the manifest",
        r"can only install packages when your package\.json and package-lock\.json",
        r"Your lockfile needs to be updated, but yarn was run with `--frozen-lockfile`",
        r"ERR_PNPM_OUTDATED_LOCKFILE",
        r"poetry\.lock (?:is not consistent|was last generated)",
        r"pyproject\.toml changed significantly",
        r"(?:uv\.lock|The lockfile at `uv\.lock`) needs to be updated",
    ),
    _rule(
        CONFIG,
        "the install command needs a lockfile the repository does not have",
        r"`?npm ci`? (?:command )?can only install",
        r"ERR_PNPM_NO_LOCKFILE",
        r"Unable to find a (?:lockfile|poetry\.lock)",
    ),
    _rule(
        CONFIG,
        "corepack cannot verify the package manager it downloads: the registry serves no "
        "signatures (a mirror)",
        r"No compatible signature found in package metadata",
    ),
    _rule(
        CONFIG,
        "a tool the stage calls is not installed in its image",
        r"\bcommand not found\b",
        r"\bsh: \d+: [^:\s]{1,200}: not found",
        r"executable file not found in \$PATH",
        r"error: no such (?:sub)?command: `",
        r"No module named (?:'?pytest'?|'?pip'?|'?poetry'?|'?uv'?)\b",
    ),
    _rule(
        CONFIG,
        "a file or script the stage names does not exist (or the working directory is wrong)",
        r"(?:ba)?sh: (?:line \d+: )?[^:\s]{1,300}: No such file or directory",
        r"can't open file '[^']{1,500}': \[Errno 2\]",
        r"npm (?:ERR!|error) code ENOENT",
        r"npm (?:ERR!|error) enoent .{0,300}package\.json'",
        r"Could not open requirements file",
        r"\bcd: (?:[^:]{1,300}: No such file or directory|can't cd to)",
        r"No rule to make target",
        r"ERR_PNPM_NO_IMPORTER_MANIFEST_FOUND",
        r"does not appear to be a Python project",
        r"Directory '[^']{1,300}' is not installable",
        r"error: failed to parse manifest at",
        r"could not find `Cargo\.toml`",
        r"go: go\.mod file not found",
    ),
    _rule(
        CONFIG,
        "a script the stage runs is not executable",
        r"(?:ba)?sh: (?:line \d+: )?[^:\s]{1,300}: Permission denied",
    ),
    _rule(
        CONFIG,
        "the stage fetches from a host the build network does not reach (the egress proxy "
        "refused the tunnel): git hook repositories or downloads outside the package registries",
        # A refusal by the build's own egress path: the same on every retry.
        r"CONNECT tunnel failed, response [45]\d\d",
        r"Received HTTP code [45]\d\d from proxy after CONNECT",
    ),
    _rule(
        CONFIG,
        "the installed version of a tool does not match the version the repository's "
        "configuration was written for (pin the tool to a matching release)",
        r"'NoxfileOptions' object has no attribute",
        r"The Nox version does not satisfy|nox\.needs_version",
        r"This version of \S{1,100} requires (?:a )?(?:newer|older|different) ",
        r"requires (?:a )?(?:newer|more recent) version of (?:nox|tox|pip|poetry|pre-commit)\b",
        r"ERR_PNPM_UNSUPPORTED_ENGINE|npm (?:ERR!|error) (?:code )?EBADENGINE",
        r"ERROR: Package '[^']{1,200}' requires a different Python",
        r"The current project's supported Python range",
        r"pre-commit version \S{1,50} (?:is|was) (?:less|older) than|minimum_pre_commit_version",
        # A Node older than the repository's tools need (a builtin or flag it does not know).
        r"ERR_UNKNOWN_BUILTIN_MODULE",
        r"is not allowed in NODE_OPTIONS|node: bad option: --",
    ),
    _rule(
        CONFIG,
        "the tests need a database or cache service the stage does not start "
        "(Postgres, MySQL, Redis or MongoDB on localhost)",
        r"connection to server at \"?(?:localhost|127\.0\.0\.1)\"?[^\n]{0,80}(?:5432|failed)",
        r"could not connect to server: (?:Connection refused|No such file or directory)",
        r"Can't connect to (?:local )?MySQL server",
        r"Error 111 connecting to (?:localhost|127\.0\.0\.1):6379",
        r"Redis::CannotConnectError|redis\.exceptions\.ConnectionError",
        r"MongoServerSelectionError|ServerSelectionTimeoutError",
    ),
    # -- infrastructure: the runner, the network, the registries ------------------------------
    _rule(
        INFRA,
        "the stage ran out of memory",
        r"JavaScript heap out of memory",
        r"\bOut of memory\b|\bout of memory\b|Cannot allocate memory|\bENOMEM\b",
        r"^Killed$",
    ),
    _rule(
        INFRA,
        "the build environment refuses shared-memory semaphores (no writable /dev/shm)",
        r"_multiprocessing\.SemLock\(|SemLock\.__init__\(",
    ),
    _rule(
        INFRA,
        "the build host ran out of disk space",
        r"No space left on device|\bENOSPC\b",
    ),
    _rule(
        INFRA,
        "a host name could not be resolved (DNS)",
        r"Could not resolve host",
        r"Couldn't resolve host",
        r"Temporary failure in name resolution",
        r"Name or service not known",
        r"\bEAI_AGAIN\b",
        r"getaddrinfo (?:ENOTFOUND|EAI_AGAIN)",
        r"dial tcp: lookup \S{1,300} (?:no such host|i/o timeout)",
        r"nodename nor servname provided",
    ),
    _rule(
        INFRA,
        "a package registry answered with a server error",
        r"npm (?:ERR!|error) (?:code E5\d\d|5\d\d )",
        r"npm (?:ERR!|error) (?:code E405|405 Method Not Allowed)",
        r"npm (?:ERR!|error) audit endpoint returned an error",
        r"\b5\d\d (?:Internal Server Error|Bad Gateway|Service Unavailable|Gateway Time-?out)\b",
        r"returned error: 5\d\d",
        r"\bHTTP (?:status|code|error)?:? ?5\d\d\b",
        r"received HTTP code 5\d\d",
        r"\btoomanyrequests\b|429 Too Many Requests",
    ),
    _rule(
        INFRA,
        "a network connection failed (registry or download)",
        r"\bECONNRESET\b",
        r"\bETIMEDOUT\b",
        r"\bESOCKETTIMEDOUT\b|ERR_SOCKET_TIMEOUT",
        r"\bENETUNREACH\b|\bEHOSTUNREACH\b|[Nn]etwork is unreachable",
        r"ECONNREFUSED (?!127\.|::1|\[::1\]|localhost)",
        r"Connection reset by peer",
        r"TLS handshake timeout|i/o timeout",
        r"Failed to establish a new connection",
        r"Max retries exceeded with url",
        r"ReadTimeoutError",
        r"Retrying \(Retry\(total=",
        r"npm (?:ERR!|error) network",
        r"request to https?://\S{1,500} failed, reason:",
        r"There appears to be trouble with your network connection",
        r"ERR_PNPM_META_FETCH_FAIL|ERR_PNPM_FETCH_\d+",
        r"spurious network error|failed to download from|error: failed to fetch",
        r"\(from versions: none\)",
        r"unexpected EOF while (?:reading|downloading)",
    ),
    # -- flaky: known to pass on a retry --------------------------------------------------------
    _rule(
        FLAKY,
        "a test timed out waiting (a known flaky pattern)",
        r"Exceeded timeout of \d+ ?ms for a (?:test|hook)",
        r"Timeout of \d+ms exceeded",
        r"\b(?:Test|Hook) timed out in \d+ ?ms",  # vitest
        r"Navigation timeout of \d+ ?ms exceeded",
        r"StaleElementReferenceException",
    ),
    _rule(
        FLAKY,
        "a test asserted on elapsed wall-clock time (a known flaky pattern on a busy host)",
        # Node's assert prints the failing expression: assert.ok(Date.now() - time <= 1100).
        r"assert\w*(?:\.\w+)?\(.{0,200}?(?:Date\.now\(\)|performance\.now\(\)|"
        r"process\.hrtime(?:\.bigint)?\(\S{0,40}\)|new Date\(\)\.getTime\(\))\s*-",
        r"expect\(.{0,200}?(?:Date\.now\(\)|performance\.now\(\))\s*-.{0,200}\)\s*"
        r"\.toBe(?:LessThan|GreaterThan)",
        r"assert .{0,200}?time\.(?:time|monotonic|perf_counter)\(\)\s*-\s*\w+\s*[<>]",
    ),
    _rule(
        FLAKY,
        "a port or file was still held by another process (a known flaky pattern)",
        r"\bEADDRINUSE\b|Address already in use",
        r"Text file busy",
        r"database is locked",
        r"deadlock detected",
        r"Resource temporarily unavailable",
    ),
    _rule(
        FLAKY,
        "a local service was not ready yet (a known flaky pattern)",
        r"ECONNREFUSED (?:127\.|::1|\[::1\]|localhost)",
        r"net::ERR_CONNECTION_REFUSED",
        r"socket hang up",
    ),
    # -- code: the repository's tests or build fail ---------------------------------------------
    _rule(
        CODE,
        "a test assertion failed",
        r"^E\s+(?:assert|AssertionError)",
        r"AssertionError",
        r"\bassert(?:ion)? failed\b",
        r"expect\(received\)",
        r"^\s*Expected:? ",
        r"panicked at",
    ),
    _rule(
        CODE,
        "the code does not compile",
        r"error\[E\d{4}\]",
        r"error TS\d{4}:",
        r"\bSyntaxError:",
        r"\bIndentationError:",
        r"cannot find symbol",
        r"COMPILATION ERROR|[Cc]ompilation failed",
        r"Failed to compile",
        r"^Type error: ",
        r":\d+:\d+: error: ",
        r"^ERROR in ",
    ),
    _rule(
        CODE,
        TESTS_FAILED,
        r"^FAILED \S",
        r"=+ (?:\d+ \w+, )*\d+ failed",
        r"Tests:\s+\d+ failed",
        r"^Tests\s+\d+ failed\b",
        r"\b\d+ failing\b",
        r"^--- FAIL: ",
        r"^FAIL\s",
        r"test result: FAILED",
        r"^FAILED \((?:failures|errors)=",
        r"Tests run: \d+, Failures: [1-9]",
        r"BUILD FAILURE",
    ),
    _rule(
        CODE,
        "a linter or type checker found errors",
        r"✖ \d+ problems?",
        r"\bFound \d+ errors?\b",
        r"would reformat",
        r"^error: Recipe `",
    ),
    _rule(
        CODE,
        "a module the code imports is missing",
        r"ModuleNotFoundError: No module named",
        r"Cannot find module '",
        r"ImportError: ",
    ),
)

# Which class explains a failure when several left their marks in the log.
CLASS_PRECEDENCE: tuple[FailureClass, ...] = (CONFIG, INFRA, FLAKY, CODE)
