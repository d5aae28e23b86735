"""``bigquery_extract``: a BigQuery query's result as a table output, page by page.

Needs the optional extra ``bigquery`` (``pip install 'figway[bigquery]'``).
figway imports this module without it: ``google.cloud.bigquery`` is imported
only when a node runs, and a workflow using the type is refused when it is
defined (:func:`bigquery_unavailable`).

How a node runs: the query starts as a job (``jobs.insert``) labelled
``figway``; the node waits for it, checking the kill switch (a killed run
cancels the job, so it stops being billed); then it reads the result through
the REST API (``getQueryResults``), ``page_size`` rows at a time, writing each
page to the Parquet output before fetching the next, so a worker holds one
page whatever the size of the result. The BigQuery Storage API is not used:
it needs another package and another permission.

Credentials: ``credentials: secret:NAME`` names a secret holding a
service-account JSON key; without it the worker's application default
credentials are used. Example config::

    project: my-project
    query: SELECT id, total FROM `my-project.sales.orders` WHERE day = @day
    parameters: {day: "param:day"}
    maximum_bytes_billed: 10000000000
    credentials: secret:bq-reader
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

import pyarrow as pa
from pydantic import Field, StringConstraints, ValidationInfo, field_validator

from backends.artifacts import ArtifactRef
from backends.model.errors import NodeCancelledError, NodeFailedError
from backends.nodes.base import Admission, NodeConfig, NodeContext, NodeType
from backends.nodes.tables import Progress, bind_parameters
from backends.runtime.secrets import checked_secret_name, secret_name

if TYPE_CHECKING:
    from google.auth.credentials import Credentials
    from google.cloud import bigquery

__all__ = [
    "BIGQUERY_EXTRACT",
    "BigQueryExtractConfig",
    "bigquery_unavailable",
    "job_config",
    "run_bigquery_extract",
    "write_pages",
]

#: The label every job figway starts carries (``figway: bigquery_extract``), so they
#: can be found, and billed, apart from everything else in the project.
FIGWAY_LABEL = "figway"
#: Prefix of the job ids figway starts, for the same reason.
JOB_ID_PREFIX = "figway_"
#: How long one HTTP request to BigQuery may take (a page of results included).
REQUEST_TIMEOUT_SECONDS = 300.0
#: The longest wait between two checks of a running query.
MAX_POLL_SECONDS = 5.0

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: Error reasons that are BigQuery's fault, not the query's.
_SERVER_REASONS = {"backendError", "internalError"}

# BigQuery's own rules, checked when the workflow is defined rather than when it runs.
_PROJECT = r"^(?:[a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$"
ParameterName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
LabelKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
LabelValue = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]{0,63}$")]
#: What a query parameter may be written as; its BigQuery type follows from its Python type.
BigQueryScalar = bool | int | Annotated[float, Field(allow_inf_nan=False)] | str


def bigquery_unavailable() -> str | None:
    """Why ``bigquery_extract`` cannot run on this install, or None when it can."""
    if importlib.util.find_spec("google.cloud.bigquery") is None:
        return "bigquery_extract needs the optional extra: pip install 'figway[bigquery]'"
    return None


class BigQueryExtractConfig(NodeConfig):
    project: str = Field(
        pattern=_PROJECT,
        description="The Google Cloud project that runs (and is billed for) the query.",
    )
    query: str = Field(
        min_length=1,
        max_length=1_000_000,
        description="One GoogleSQL query (standard SQL); named parameters are written @name.",
    )
    parameters: dict[ParameterName, BigQueryScalar] = Field(
        default_factory=dict,
        max_length=100,
        description='Named query parameters (@name in the query); "param:NAME" takes the run '
        "parameter NAME. Booleans are BOOL, integers INT64, numbers FLOAT64, text STRING.",
    )
    location: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z][A-Za-z0-9-]{0,63}$",
        description="Where the job runs (US, EU, europe-west1, …); BigQuery infers it when absent.",
    )
    credentials: str | None = Field(
        default=None,
        description="secret:NAME of a secret holding a service-account JSON key; the "
        "worker's application default credentials when absent.",
    )
    maximum_bytes_billed: int | None = Field(
        default=None,
        gt=0,
        description="BigQuery fails the query, unbilled, when it would bill more bytes.",
    )
    page_size: int = Field(
        default=50_000,
        ge=1,
        le=100_000,
        description="Rows fetched (and written) at a time: what a worker holds in memory.",
    )
    timeout_seconds: float = Field(
        default=600,
        gt=0,
        le=21_600,
        description="How long the query may run before BigQuery stops it and the node fails "
        "(reading the result is not counted).",
    )
    labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict,
        max_length=63,
        description=f"Labels for the job (for billing reports); figway adds {FIGWAY_LABEL!r}.",
    )

    @field_validator("credentials")
    @classmethod
    def _credentials_is_a_secret(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        Admission.of(info).check_secret(value, use="bigquery_credentials")
        if checked_secret_name(value) is None:
            # Never echo the value: it may be the key itself.
            raise ValueError(
                "credentials must name a secret (credentials: secret:NAME, with the "
                "service-account JSON key in FIGWAY_SECRET_NAME on the workers); a key written "
                "in the definition would be stored in figway's database and shown by its API"
            )
        return value

    @field_validator("labels")
    @classmethod
    def _figway_label_is_reserved(cls, value: dict[str, str]) -> dict[str, str]:
        if FIGWAY_LABEL in value:
            raise ValueError(f"the label {FIGWAY_LABEL!r} is set by figway")
        return value


def job_config(
    config: BigQueryExtractConfig, parameters: Mapping[str, Any]
) -> bigquery.QueryJobConfig:
    """The query job's configuration; ``parameters`` are the run's (for ``param:NAME``).

    Raises :class:`NodeFailedError` when a parameter names a run parameter the run
    lacks, or a value BigQuery has no scalar type for.
    """
    from google.cloud import bigquery

    bound = bind_parameters(config.parameters, parameters) or {}
    options: dict[str, Any] = {
        "use_legacy_sql": False,
        "query_parameters": [_query_parameter(name, value) for name, value in bound.items()],
        "labels": {**config.labels, FIGWAY_LABEL: "bigquery_extract"},
        # BigQuery stops the query itself: a worker that dies does not leave it billing.
        "job_timeout_ms": round(config.timeout_seconds * 1000),
    }
    if config.maximum_bytes_billed is not None:
        options["maximum_bytes_billed"] = config.maximum_bytes_billed
    return bigquery.QueryJobConfig(**options)


def _query_parameter(name: str, value: Any) -> bigquery.ScalarQueryParameter:
    from google.cloud import bigquery

    # bool before int: True is an int too.
    if isinstance(value, bool):
        kind = "BOOL"
    elif isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise NodeFailedError(f"query parameter {name!r} is {value}, beyond BigQuery's INT64")
        kind = "INT64"
    elif isinstance(value, float):
        kind = "FLOAT64"
    elif isinstance(value, str):
        kind = "STRING"
    else:
        shown = "null" if value is None else type(value).__name__
        raise NodeFailedError(
            f"query parameter {name!r} is {shown}; BigQuery parameters are text, numbers "
            "or booleans (cast in the query for other types)"
        )
    return bigquery.ScalarQueryParameter(name, kind, value)


def write_pages(batches: Iterable[pa.RecordBatch], context: NodeContext) -> ArtifactRef:
    """Write every page to one table output; returns its reference.

    Pages are fetched one at a time, each written before the next is asked for,
    and the kill switch is checked between pages (:class:`NodeCancelledError`; the
    partial file is removed).
    """
    pages = iter(batches)
    page = next(pages, None)
    if page is None or page.num_columns == 0:
        raise NodeFailedError(
            "the query returned no result set to extract (is it a SELECT, not DDL or DML?)"
        )
    progress = Progress(context, "extracted")
    count = 0
    with context.table_store().new_table(page.schema) as table:
        while page is not None:
            table.write(page)
            count += 1
            progress.add(page.num_rows)
            if context.cancelled():
                raise NodeCancelledError(
                    f"extract stopped: the run was cancelled after {count} pages "
                    f"({progress.rows} rows)"
                )
            page = next(pages, None)
        reference = table.finish()
    progress.done(f"from BigQuery ({count} pages)")
    return reference


def run_bigquery_extract(config: BigQueryExtractConfig, context: NodeContext) -> object:
    """Run the query and output its result as a table (see the module docstring)."""
    configuration = job_config(config, context.parameters)
    context.table_store()  # fail before a billed query when there is nowhere to write
    credentials = _credentials(config, context)
    try:
        client = _client(config.project, credentials, config.location)
    except Exception as exc:
        failure = _failure(exc, config)
        if failure is None:
            raise
        raise failure from exc
    try:
        job = client.query(
            config.query,
            job_config=configuration,
            location=config.location,
            job_id_prefix=JOB_ID_PREFIX,
            timeout=REQUEST_TIMEOUT_SECONDS,
        )
        context.logger.info("started BigQuery job %s in %s", job.job_id, config.project)
        _wait_for(job, config, context)
        rows = job.result(page_size=config.page_size, timeout=REQUEST_TIMEOUT_SECONDS)
        context.logger.info(
            "query done: %s rows, %s bytes processed, %s bytes billed",
            rows.total_rows,
            job.total_bytes_processed,
            job.total_bytes_billed,
        )
        # No bqstorage_client: the REST pages, one at a time (see the module docstring).
        reference = write_pages(rows.to_arrow_iterable(), context)
    except Exception as exc:
        failure = _failure(exc, config)
        if failure is None:
            raise
        raise failure from exc
    finally:
        client.close()  # type: ignore[no-untyped-call]
    return reference.to_output()


def _client(project: str, credentials: Credentials | None, location: str | None) -> bigquery.Client:
    """The BigQuery client a node uses (tests replace it to point at a fake server)."""
    from google.cloud import bigquery

    return bigquery.Client(project=project, credentials=credentials, location=location)


def _credentials(config: BigQueryExtractConfig, context: NodeContext) -> Credentials | None:
    """The service account of ``config.credentials``, or None for application defaults."""
    if config.credentials is None:
        return None
    name = secret_name(config.credentials)
    text = context.reveal(config.credentials, use="bigquery_credentials")
    try:
        info = json.loads(text)
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise NodeFailedError(
            f"secret {name!r} does not hold a JSON key (a service-account key file)"
        )
    if isinstance(info.get("private_key"), str):
        # The whole key is masked already; an error quoting only its private key must be too.
        context.secrets.redactor.add(info["private_key"])
    from google.oauth2 import service_account

    try:
        return service_account.Credentials.from_service_account_info(info)  # type: ignore[no-untyped-call,no-any-return]
    except (ValueError, KeyError, TypeError) as exc:
        detail = context.secrets.redactor.redact(str(exc))
        raise NodeFailedError(
            f"secret {name!r} does not hold a usable service-account key: {detail}"
        ) from None


def _wait_for(job: bigquery.QueryJob, config: BigQueryExtractConfig, context: NodeContext) -> None:
    """Wait for the query, checking the kill switch; a kill or a timeout cancels the job."""
    deadline = time.monotonic() + config.timeout_seconds
    delay = 0.25
    while not job.done(timeout=REQUEST_TIMEOUT_SECONDS):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _cancel(job, context)
            raise NodeFailedError(
                f"the query did not finish within {config.timeout_seconds:g} s "
                f"(timeout_seconds); job {job.job_id} was cancelled"
            )
        if context.wait(min(delay, remaining)):
            _cancel(job, context)
            raise NodeCancelledError(
                f"the run was cancelled; BigQuery job {job.job_id} was cancelled"
            )
        delay = min(delay * 2, MAX_POLL_SECONDS)


def _cancel(job: bigquery.QueryJob, context: NodeContext) -> None:
    try:
        job.cancel(timeout=REQUEST_TIMEOUT_SECONDS)
    except Exception as exc:  # the node stops anyway; BigQuery's job timeout ends the job
        context.logger.warning("could not cancel BigQuery job %s: %s", job.job_id, exc)


def _failure(exc: BaseException, config: BigQueryExtractConfig) -> NodeFailedError | None:
    """What a google or transport error means for people, or None for anything else."""
    import concurrent.futures

    import requests
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth

    if isinstance(exc, api.GoogleAPICallError):
        details = [e for e in exc.errors if isinstance(e, dict)]
        reasons = sorted({str(e["reason"]) for e in details if e.get("reason")})
        # BigQuery's own messages: exc.message also holds the URL and the client's footer.
        messages = list(dict.fromkeys(str(e["message"]) for e in details if e.get("message")))
        message = " ".join("; ".join(messages or [str(exc.message)]).split())
        job = getattr(exc, "query_job", None)  # set by the client once a job id exists
        if job is not None and job.job_id:
            message += f" (job {job.job_id})"
        if isinstance(exc, api.Unauthorized | api.Forbidden) and "quotaExceeded" not in reasons:
            what = f"BigQuery denied access in project {config.project!r}"
        elif isinstance(exc, api.ServerError) and (not reasons or _SERVER_REASONS & set(reasons)):
            what = "BigQuery failed"
        else:  # job errors come as 500 for reasons the client does not know: not a server fault
            what = "BigQuery refused the query"
        return NodeFailedError(f"{what} ({', '.join(reasons) or exc.code}): {message}")
    if isinstance(exc, api.RetryError):
        cause = exc.cause if exc.cause is not None else exc
        return NodeFailedError(f"BigQuery did not answer (gave up retrying): {cause}")
    if isinstance(exc, auth.DefaultCredentialsError):
        return NodeFailedError(
            "no credentials for BigQuery: set credentials: secret:NAME (a service-account key), "
            f"or give the workers application default credentials ({exc})"
        )
    if isinstance(exc, auth.GoogleAuthError):
        return NodeFailedError(f"cannot authenticate to BigQuery: {exc}")
    if isinstance(exc, requests.RequestException):
        return NodeFailedError(f"cannot reach BigQuery: {exc}")
    if isinstance(exc, concurrent.futures.TimeoutError):
        return NodeFailedError(f"BigQuery did not answer within {REQUEST_TIMEOUT_SECONDS:g} s")
    return None


BIGQUERY_EXTRACT = NodeType(
    "bigquery_extract",
    BigQueryExtractConfig,
    run_bigquery_extract,
    "Runs `query` on BigQuery and outputs its result as a table, page by page.",
    unavailable=bigquery_unavailable,
)
