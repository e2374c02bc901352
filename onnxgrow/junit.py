"""JUnit XML reports of a verification (`verify --junit`), for CI systems to display: one test case per output."""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from .errors import OnnxGrowError, VerificationFailed
from .io import new_file_mode
from .report import fmt
from .verify import Report


def junit_xml(
    report: Report | None,
    reference: str,
    candidate: str | None,
    error: BaseException | None = None,
    message: str | None = None,
) -> str:
    """A JUnit XML report of a verification (what CI systems display): one test suite, one test case per output
    (a failure with its error and tolerances when it differs), or a single test case with the error when the
    check could not run (bad input: `error`; a bug in onnxgrow: any other exception). `message` words the error
    as the user should read it (the CLI names flags where the API named parameters); default str(error)."""

    name = f"onnxgrow verify {reference}" + (f" {candidate}" if candidate else "")
    suites = ET.Element("testsuites")
    suite = ET.SubElement(suites, "testsuite", name=name)
    cases: list[ET.Element] = []
    failures = errors = 0
    if report is None or error is not None and not isinstance(error, VerificationFailed):
        case = ET.SubElement(suite, "testcase", classname="onnxgrow.verify", name=str(reference))
        kind = "error" if isinstance(error, OnnxGrowError) else "internal error"
        said = message if message is not None else str(error)
        text = said.strip().splitlines()[0] if error is not None and said.strip() else type(error).__name__
        ET.SubElement(case, "error", message=f"{kind}: {text}", type=type(error).__name__).text = text
        cases.append(case)
        errors = 1
    else:
        for o in report.outputs:
            case = ET.SubElement(suite, "testcase", classname=f"onnxgrow.verify.{reference}", name=f"output {o.name}")
            detail = (
                f"shape {'x'.join(map(str, o.shape)) or 'scalar'}, max abs error {fmt(o.max_abs)}, max rel error "
                f"{fmt(o.max_rel)}, error / max|reference| {fmt(o.normalised)}, atol {o.atol:g}, rtol {o.rtol:g} "
                f"(relative to {o.relative_to})"
            )
            if not o.passed:
                ET.SubElement(
                    case, "failure", message=f"{o.name}: {o.reason or 'mismatch'}", type="VerificationFailed"
                ).text = detail
                failures += 1
            ET.SubElement(case, "system-out").text = detail
            cases.append(case)
        props = ET.SubElement(suite, "properties")
        for key in ("reference", "candidate", "provider", "iterations", "seed", "relative_to"):
            value = getattr(report, key)
            if value is not None:
                ET.SubElement(props, "property", name=key, value=str(value))
        suite.remove(props)
        suite.insert(0, props)
    for element in (suite, suites):
        element.set("tests", str(len(cases)))
        element.set("failures", str(failures))
        element.set("errors", str(errors))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def write_junit(
    path: str,
    report: Report | None,
    reference: str,
    candidate: str | None,
    error: BaseException | None = None,
    message: str | None = None,
) -> None:
    """`junit_xml` written to `path` (atomically: a temporary file in the same folder, then renamed)."""
    out = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent if str(out.parent) else ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(junit_xml(report, reference, candidate, error, message))
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
