//! The route table and the OpenAPI document built from it.
//!
//! [`OPERATIONS`] is the one list of what the server offers: method, path,
//! parameters, body, responses, who may call it and the CLI command it
//! mirrors. [`crate::router`] mounts exactly these operations (a handler per
//! operation id) and query strings are checked against their parameters, so
//! the document served at `/openapi.json` cannot drift from the routes.
//! `docs/openapi.json` is a copy a test keeps equal.

use std::borrow::Cow;
use std::sync::OnceLock;

use sandboxer_core::credits::Micros;
use sandboxer_core::duration::DurationText;
use sandboxer_core::lifecycle::State;
use sandboxer_core::model::Actor;
use sandboxer_core::profile::Profile;
use sandboxer_core::reaper::StaleReport;
use sandboxer_core::routing::Decision;
use sandboxer_core::snapshot::{Snapshot, SnapshotState};
use sandboxer_credits::Entry;
use sandboxer_telemetry::HostInventory;
use schemars::generate::{Contract, SchemaSettings};
use schemars::transform::RecursiveTransform;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::dashboard::DashboardData;
use crate::error::ErrorBody;
use crate::uploads::UploadView;
use crate::views::{
    Balance, CheckAnswer, GrantResult, Health, HostRow, ProfileRow, Public, ReapAnswer, Usage,
    WhoAmI,
};
use crate::{e2b, routes};

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed.
    Public,
    /// Any token; `agt` and `atm` tokens see and act on their own things
    /// only (another actor's sandbox is 404, another actor's credits 403).
    Actor,
    /// Only `adm` tokens; others get 403.
    Admin,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::Actor => "actor",
            Access::Admin => "admin",
        }
    }
}

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    Path,
    Query,
}

/// The type of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    SandboxId,
    ProfileId,
    Actor,
    Duration,
    Amount,
    Bool,
    /// A lifecycle state; repeatable (`?state=ready&state=failed` or
    /// `?state=ready,failed`).
    States,
    /// Extension ids; repeatable.
    Extensions,
    /// An upload id (`upl-...`).
    UploadId,
    /// A snapshot id (`snap-...`).
    SnapshotId,
    /// Snapshot states; repeatable.
    SnapshotStates,
    /// A page size: 1 to [`crate::routes::LIST_MAX`].
    Limit,
    /// An opaque cursor a previous page answered.
    Cursor,
    /// E2B's sandbox states (`running`, `paused`), comma-separated.
    E2bStates,
    /// A sort direction: `asc` or `desc`.
    Order,
    /// An RFC 3339 time.
    Time,
    /// E2B's metadata filter: `key=value&key2=value2`.
    Metadata,
    /// E2B's page token, as `X-Next-Token` answered it.
    E2bCursor,
}

/// One path or query parameter.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub location: In,
    pub kind: Kind,
    pub description: &'static str,
}

/// How the schema of a body is made: by its type's [`JsonSchema`] (see
/// [`schema_of`]), so the document describes what the handlers serialize.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// The schema of `T`, as a reference into `components/schemas` (or inline
/// for types that are not named there, such as lists).
pub fn schema_of<T: JsonSchema + ?Sized>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// What a response carries.
#[derive(Debug, Clone, Copy)]
pub enum RespBody {
    /// JSON of this schema.
    Json(SchemaFn),
    /// Nothing (204).
    Empty,
    /// The error body (`Error`, or `E2bError` on the E2B routes), by the
    /// shared response of its status.
    Error,
}

/// One documented response.
#[derive(Debug, Clone, Copy)]
pub struct Resp {
    pub status: u16,
    pub description: &'static str,
    pub body: RespBody,
}

/// What a request carries.
#[derive(Debug, Clone, Copy)]
pub enum RequestBody {
    /// JSON of this schema.
    Json(SchemaFn),
    /// A repo archive: tar, optionally gzip-compressed.
    Archive,
}

/// Every operation of the API, by its OpenAPI `operationId`. The router
/// matches on it exhaustively, so an operation without a handler does not
/// compile.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::Display,
    strum::EnumIter,
    strum::EnumCount,
)]
pub enum OpId {
    #[strum(serialize = "health")]
    Health,
    #[strum(serialize = "openapi")]
    Openapi,
    #[strum(serialize = "whoami")]
    Whoami,
    #[strum(serialize = "createSandbox")]
    CreateSandbox,
    #[strum(serialize = "listSandboxes")]
    ListSandboxes,
    #[strum(serialize = "dashboard")]
    Dashboard,
    #[strum(serialize = "getSandbox")]
    GetSandbox,
    #[strum(serialize = "destroySandbox")]
    DestroySandbox,
    #[strum(serialize = "recreateSandbox")]
    RecreateSandbox,
    #[strum(serialize = "extendSandboxTtl")]
    ExtendSandboxTtl,
    #[strum(serialize = "pauseSandbox")]
    PauseSandbox,
    #[strum(serialize = "resumeSandbox")]
    ResumeSandbox,
    #[strum(serialize = "snapshotSandbox")]
    SnapshotSandbox,
    #[strum(serialize = "listSnapshots")]
    ListSnapshots,
    #[strum(serialize = "getSnapshot")]
    GetSnapshot,
    #[strum(serialize = "deleteSnapshot")]
    DeleteSnapshot,
    #[strum(serialize = "listProfiles")]
    ListProfiles,
    #[strum(serialize = "getProfile")]
    GetProfile,
    #[strum(serialize = "explainRoute")]
    ExplainRoute,
    #[strum(serialize = "listHosts")]
    ListHosts,
    #[strum(serialize = "hostTelemetry")]
    HostTelemetry,
    #[strum(serialize = "inspectStale")]
    InspectStale,
    #[strum(serialize = "reapStale")]
    ReapStale,
    #[strum(serialize = "creditsBalance")]
    CreditsBalance,
    #[strum(serialize = "grantCredits")]
    GrantCredits,
    #[strum(serialize = "creditsLedger")]
    CreditsLedger,
    #[strum(serialize = "creditsUsage")]
    CreditsUsage,
    #[strum(serialize = "creditsCheck")]
    CreditsCheck,
    #[strum(serialize = "uploadRepo")]
    UploadRepo,
    #[strum(serialize = "listUploads")]
    ListUploads,
    #[strum(serialize = "deleteUpload")]
    DeleteUpload,
    #[strum(serialize = "e2bCreateSandboxV2")]
    E2bCreateSandboxV2,
    #[strum(serialize = "e2bCreateSandbox")]
    E2bCreateSandbox,
    #[strum(serialize = "e2bListSandboxesV2")]
    E2bListSandboxesV2,
    #[strum(serialize = "e2bListSandboxes")]
    E2bListSandboxes,
    #[strum(serialize = "e2bGetSandbox")]
    E2bGetSandbox,
    #[strum(serialize = "e2bKillSandbox")]
    E2bKillSandbox,
    #[strum(serialize = "e2bSetTimeout")]
    E2bSetTimeout,
    #[strum(serialize = "e2bRefreshSandbox")]
    E2bRefreshSandbox,
    #[strum(serialize = "e2bConnectSandbox")]
    E2bConnectSandbox,
    #[strum(serialize = "e2bConnectSandboxV2")]
    E2bConnectSandboxV2,
    #[strum(serialize = "e2bSandboxMetrics")]
    E2bSandboxMetrics,
    #[strum(serialize = "e2bPauseSandbox")]
    E2bPauseSandbox,
    #[strum(serialize = "e2bResumeSandbox")]
    E2bResumeSandbox,
    #[strum(serialize = "e2bSnapshotSandbox")]
    E2bSnapshotSandbox,
    #[strum(serialize = "e2bListSnapshots")]
    E2bListSnapshots,
    #[strum(serialize = "e2bDeleteTemplate")]
    E2bDeleteTemplate,
}

impl OpId {
    /// The `operationId`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The HTTP methods the API answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::Display)]
#[strum(serialize_all = "lowercase")]
pub enum Method {
    Get,
    Post,
    Delete,
}

impl Method {
    /// As the OpenAPI document spells it: `get`, `post`, `delete`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One operation of the API.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// The OpenAPI `operationId`; the router's key for the handler.
    pub id: OpId,
    pub method: Method,
    /// The path, with `{name}` parameters (axum's syntax is the same).
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub description: &'static str,
    pub access: Access,
    /// The CLI command that does the same.
    pub cli: &'static str,
    pub params: &'static [Param],
    /// The request body (optional when `body_required` is false: an empty
    /// body is `{}`).
    pub body: Option<RequestBody>,
    pub body_required: bool,
    pub responses: &'static [Resp],
}

const fn path(name: &'static str, kind: Kind, description: &'static str) -> Param {
    Param {
        name,
        location: In::Path,
        kind,
        description,
    }
}

const fn query(name: &'static str, kind: Kind, description: &'static str) -> Param {
    Param {
        name,
        location: In::Query,
        kind,
        description,
    }
}

const fn ok(status: u16, description: &'static str, schema: SchemaFn) -> Resp {
    Resp {
        status,
        description,
        body: RespBody::Json(schema),
    }
}

const fn err(status: u16, description: &'static str) -> Resp {
    Resp {
        status,
        description,
        body: RespBody::Error,
    }
}

const fn empty(status: u16, description: &'static str) -> Resp {
    Resp {
        status,
        description,
        body: RespBody::Empty,
    }
}

const SANDBOX_ID: Param = path(
    "id",
    Kind::SandboxId,
    "The sandbox id (`sbx-...`). Another actor's sandbox is 404 for `agt` and `atm` tokens.",
);

const NOT_FOUND_SANDBOX: Resp = err(404, "No such sandbox (or it belongs to another actor)");
const SNAPSHOT_ID: Param = path(
    "id",
    Kind::SnapshotId,
    "The snapshot id (`snap-...`). Another actor's snapshot is 404 for `agt` and `atm` tokens.",
);
const NOT_FOUND_SNAPSHOT: Resp = err(404, "No such snapshot (or it belongs to another actor)");
const BAD_REQUEST: Resp = err(
    400,
    "A parameter or the body is wrong; the message says which",
);
const CONFLICT: Resp = err(409, "Conflicts with the sandbox's state");
const PROVISION: [Resp; 5] = [
    err(402, "The actor's credits do not cover the hold"),
    err(501, "The profile's extension is not in this build"),
    err(
        502,
        "Provisioning failed (the sandbox ended `failed`) or the host is unreachable",
    ),
    err(
        503,
        "No place can take the sandbox now (full, unreachable or excluded)",
    ),
    err(504, "The sandbox was not ready in time"),
];

/// Every operation, in the order of the document.
const E2B_ID: Param = path(
    "sandboxID",
    Kind::SandboxId,
    "The sandbox id (`sbx-...`). A sandbox that ended, or another actor's, is 404.",
);
const E2B_NOT_FOUND: Resp = ok(
    404,
    "No running sandbox of that id for this caller",
    schema_of::<sandboxer_core::e2b::ErrorBody>,
);
const E2B_NO_CONTENT: Resp = empty(204, "Done");
const E2B_CREATED: [Resp; 4] = [
    ok(
        201,
        "Created and running (or the one the Idempotency-Key made)",
        schema_of::<sandboxer_core::e2b::Sandbox>,
    ),
    ok(
        404,
        "No template of that name",
        schema_of::<sandboxer_core::e2b::ErrorBody>,
    ),
    ok(
        402,
        "The actor's credits do not cover the hold",
        schema_of::<sandboxer_core::e2b::ErrorBody>,
    ),
    ok(
        503,
        "No route can place it now",
        schema_of::<sandboxer_core::e2b::ErrorBody>,
    ),
];
const E2B_CREATE: &str =
    "E2B's create: `templateID` names a profile (its id, an alias it declares, \
    its id without `profile.`, or `base` for the default profile), `timeout` is the TTL in \
    seconds (default: the profile's), `metadata` is kept on the record, `envVars` are the \
    profile's inputs (refused where it declares none of that name). The `Idempotency-Key` \
    header is the idempotency key: a retried create answers the first one's sandbox. Answers \
    once the sandbox is ready. `autoPause` and `volumeMounts` are refused.";
const E2B_CONNECT: &str = "A running sandbox answers as at create; with `timeout`, it then \
    ends that many seconds from now. A sandbox that ended, or another actor's, is 404.";

pub const OPERATIONS: &[Operation] = &[
    Operation {
        id: OpId::Health,
        method: Method::Get,
        path: "/healthz",
        tag: "meta",
        summary: "Liveness",
        description: "200 while the server runs. No token needed.",
        access: Access::Public,
        cli: "",
        params: &[],
        body: None,
        body_required: false,
        responses: &[ok(200, "The server runs", schema_of::<Health>)],
    },
    Operation {
        id: OpId::Openapi,
        method: Method::Get,
        path: "/openapi.json",
        tag: "meta",
        summary: "This document",
        description:
            "The OpenAPI 3.1 document, generated from the server's route table. No token needed.",
        access: Access::Public,
        cli: "",
        params: &[],
        body: None,
        body_required: false,
        responses: &[ok(200, "The document", schema_of::<OpenApiDocument>)],
    },
    Operation {
        id: OpId::Whoami,
        method: Method::Get,
        path: "/v1/whoami",
        tag: "meta",
        summary: "The caller's actor and token name",
        description: "Which actor the bearer token acts as; a cheap way to check a token.",
        access: Access::Actor,
        cli: "",
        params: &[],
        body: None,
        body_required: false,
        responses: &[ok(200, "The caller", schema_of::<WhoAmI<'static>>)],
    },
    Operation {
        id: OpId::CreateSandbox,
        method: Method::Post,
        path: "/v1/sandboxes",
        tag: "sandboxes",
        summary: "Establish a sandbox",
        description:
            "Validates the request (profile, inputs, TTL, actor, host), records the sandbox \
            in `provisioning`, provisions it and, unless `wait` is false, waits until it is ready. \
            An empty body creates the canary on the default host. With an idempotency key (the \
            `idempotency_key` field or the `Idempotency-Key` header) the same request returns the \
            sandbox the key first made (200) and a different request with the same key is 409. \
            `agt` and `atm` tokens create as their own actor.",
        access: Access::Actor,
        cli: "sandboxer create",
        params: &[],
        body: Some(RequestBody::Json(schema_of::<routes::CreateBody>)),
        body_required: false,
        responses: &[
            ok(201, "Created and ready", schema_of::<Public<'static>>),
            ok(200, "The idempotency key's existing sandbox", schema_of::<Public<'static>>),
            ok(
                202,
                "Recorded; provisioning goes on (`wait: false`)",
                schema_of::<Public<'static>>,
            ),
            BAD_REQUEST,
            err(
                403,
                "`actor` names another actor and the token is not `adm`",
            ),
            err(404, "No such profile or host"),
            err(409, "The idempotency key was used for a different request"),
            PROVISION[0],
            PROVISION[1],
            PROVISION[2],
            PROVISION[3],
            PROVISION[4],
        ],
    },
    Operation {
        id: OpId::ListSandboxes,
        method: Method::Get,
        path: "/v1/sandboxes",
        tag: "sandboxes",
        summary: "List sandboxes, oldest first, a page at a time",
        description:
            "The sandboxes matching the filters, oldest first, at most `limit` of them (default \
            100). When more match, the `X-Next-Token` response header holds a cursor: pass it \
            as `next_token` for the next page; the last page has no such header. `agt` and \
            `atm` tokens see their own only.",
        access: Access::Actor,
        cli: "sandboxer list",
        params: &[
            query(
                "state",
                Kind::States,
                "Only these states (repeatable, or comma-separated)",
            ),
            query(
                "live",
                Kind::Bool,
                "Only live sandboxes (not destroyed or failed)",
            ),
            query("actor", Kind::Actor, "Only this actor's sandboxes"),
            query("profile", Kind::ProfileId, "Only this profile"),
            query("host", Kind::String, "Only this host"),
            query("limit", Kind::Limit, "At most this many records (1 to 1000, default 100)"),
            query(
                "next_token",
                Kind::Cursor,
                "Where to continue: the `X-Next-Token` header of the previous page",
            ),
        ],
        body: None,
        body_required: false,
        responses: &[ok(200, "The records", schema_of::<Vec<Public<'static>>>), BAD_REQUEST],
    },
    Operation {
        id: OpId::Dashboard,
        method: Method::Get,
        path: "/v1/dashboard",
        tag: "dashboard",
        summary: "What the dashboard shows, in one request",
        description:
            "The sandboxes matching the filters (live ones when no `state` is given; at most \
            500, newest first), the credits accounts and, for `adm` tokens, the counts of every \
            state and the State Hub outbox. `agt` and `atm` tokens see their own sandboxes and \
            account only. The dashboard at `/` polls this.",
        access: Access::Actor,
        cli: "sandboxer list",
        params: &[
            query(
                "state",
                Kind::States,
                "Only these states (repeatable, or comma-separated); default the live ones",
            ),
            query("actor", Kind::Actor, "Only this actor's sandboxes"),
            query("profile", Kind::ProfileId, "Only this profile"),
            query("host", Kind::String, "Only this host"),
        ],
        body: None,
        body_required: false,
        responses: &[ok(200, "The dashboard's data", schema_of::<DashboardData<'static>>), BAD_REQUEST],
    },
    Operation {
        id: OpId::GetSandbox,
        method: Method::Get,
        path: "/v1/sandboxes/{id}",
        tag: "sandboxes",
        summary: "One sandbox",
        description: "The record, as `sandboxer get ID --json` prints it.",
        access: Access::Actor,
        cli: "sandboxer get ID",
        params: &[SANDBOX_ID],
        body: None,
        body_required: false,
        responses: &[ok(200, "The record", schema_of::<Public<'static>>), NOT_FOUND_SANDBOX],
    },
    Operation {
        id: OpId::DestroySandbox,
        method: Method::Delete,
        path: "/v1/sandboxes/{id}",
        tag: "sandboxes",
        summary: "Tear a sandbox down",
        description: "Tears it down and records it `destroyed` (reason `destroyed`). Destroying a \
            destroyed sandbox returns it unchanged.",
        access: Access::Actor,
        cli: "sandboxer destroy ID",
        params: &[SANDBOX_ID],
        body: None,
        body_required: false,
        responses: &[
            ok(200, "The record, destroyed", schema_of::<Public<'static>>),
            NOT_FOUND_SANDBOX,
            CONFLICT,
            err(501, "The sandbox's extension is not in this build"),
            err(
                502,
                "Teardown failed or the host is unreachable; it stays `destroying`",
            ),
        ],
    },
    Operation {
        id: OpId::RecreateSandbox,
        method: Method::Post,
        path: "/v1/sandboxes/{id}/recreate",
        tag: "sandboxes",
        summary: "Replace a sandbox",
        description: "A new sandbox with the same profile, inputs, host, actor and extension; the \
            old one ends `destroyed` with reason `recreated`, and `recreated_from` / \
            `recreated_as` link the two. Returns the new record.",
        access: Access::Actor,
        cli: "sandboxer recreate ID",
        params: &[SANDBOX_ID],
        body: Some(RequestBody::Json(schema_of::<routes::RecreateBody>)),
        body_required: false,
        responses: &[
            ok(201, "The new sandbox, ready", schema_of::<Public<'static>>),
            ok(
                202,
                "The new sandbox, provisioning (`wait: false`)",
                schema_of::<Public<'static>>,
            ),
            BAD_REQUEST,
            NOT_FOUND_SANDBOX,
            err(409, "The sandbox is destroying or destroyed"),
            PROVISION[0],
            PROVISION[1],
            PROVISION[2],
            PROVISION[3],
            PROVISION[4],
        ],
    },
    Operation {
        id: OpId::ExtendSandboxTtl,
        method: Method::Post,
        path: "/v1/sandboxes/{id}/extend-ttl",
        tag: "sandboxes",
        summary: "Move a sandbox's expiry later",
        description: "Adds `by` to the TTL; the total stays within the profile's `max_ttl`. \
            Metered sandboxes hold the extra time first.",
        access: Access::Actor,
        cli: "sandboxer extend-ttl ID DURATION",
        params: &[SANDBOX_ID],
        body: Some(RequestBody::Json(schema_of::<routes::ExtendBody>)),
        body_required: true,
        responses: &[
            ok(200, "The record with its new expiry", schema_of::<Public<'static>>),
            BAD_REQUEST,
            err(402, "The actor's credits do not cover the extra time"),
            NOT_FOUND_SANDBOX,
            err(409, "The sandbox is not live"),
            err(502, "The host is unreachable"),
        ],
    },
    Operation {
        id: OpId::PauseSandbox,
        method: Method::Post,
        path: "/v1/sandboxes/{id}/pause",
        tag: "sandboxes",
        summary: "Pause a ready sandbox",
        description: "Nothing of it runs until it is resumed; its TTL stops (the time left is kept \
            in `ttl_remaining_seconds`) and its profile's paused retention runs instead (its \
            `expires_at` while paused; then the reaper destroys it `expired`). A metered sandbox \
            pays for its run so far and holds only the paused price. Pausing a paused sandbox \
            returns it unchanged.",
        access: Access::Actor,
        cli: "sandboxer pause ID",
        params: &[SANDBOX_ID],
        body: None,
        body_required: false,
        responses: &[
            ok(200, "The record, paused", schema_of::<Public<'static>>),
            err(402, "The actor's credits do not cover the paused price"),
            NOT_FOUND_SANDBOX,
            err(409, "The sandbox is not ready (provisioning, resuming, destroying, ended)"),
            err(501, "Its extension cannot pause"),
            err(502, "The host is unreachable"),
        ],
    },
    Operation {
        id: OpId::ResumeSandbox,
        method: Method::Post,
        path: "/v1/sandboxes/{id}/resume",
        tag: "sandboxes",
        summary: "Resume a paused sandbox",
        description: "It runs again with the time it had left, or `ttl` from now (its whole running \
            time within the profile's `max_ttl`). A metered sandbox holds the run first: 402, \
            and it stays paused with nothing held, when the credits do not cover it. Resuming a \
            ready sandbox without `ttl` returns it unchanged.",
        access: Access::Actor,
        cli: "sandboxer resume ID [--ttl DURATION]",
        params: &[SANDBOX_ID],
        body: Some(RequestBody::Json(schema_of::<routes::ResumeBody>)),
        body_required: false,
        responses: &[
            ok(200, "The record, ready", schema_of::<Public<'static>>),
            BAD_REQUEST,
            err(402, "The actor's credits do not cover the run"),
            NOT_FOUND_SANDBOX,
            err(409, "The sandbox is not paused"),
            err(501, "Its extension cannot resume"),
            err(502, "The host is unreachable"),
        ],
    },
    Operation {
        id: OpId::SnapshotSandbox,
        method: Method::Post,
        path: "/v1/sandboxes/{id}/snapshots",
        tag: "snapshots",
        summary: "Save a sandbox as a snapshot",
        description: "A `snap-...` record of the ready or paused sandbox, `ready` once its extension \
            has saved it whole (`failed`, with nothing of it kept, otherwise). Create new \
            sandboxes from it with `from_snapshot`.",
        access: Access::Actor,
        cli: "sandboxer snapshot ID [--name NAME]",
        params: &[SANDBOX_ID],
        body: Some(RequestBody::Json(schema_of::<routes::SnapshotBody>)),
        body_required: false,
        responses: &[
            ok(201, "The snapshot, ready", schema_of::<Snapshot>),
            BAD_REQUEST,
            NOT_FOUND_SANDBOX,
            err(409, "The sandbox is not ready or paused"),
            err(501, "Its extension cannot snapshot"),
            err(502, "The host is unreachable"),
        ],
    },
    Operation {
        id: OpId::ListSnapshots,
        method: Method::Get,
        path: "/v1/snapshots",
        tag: "snapshots",
        summary: "List snapshots, oldest first",
        description: "The caller's snapshots (`adm` tokens: every snapshot, or one actor's with \
            `actor`).",
        access: Access::Actor,
        cli: "sandboxer snapshots list",
        params: &[
            query("state", Kind::SnapshotStates, "Only these states (repeatable, or comma-separated)"),
            query("actor", Kind::Actor, "Only this actor's (adm tokens)"),
        ],
        body: None,
        body_required: false,
        responses: &[ok(200, "The snapshots", schema_of::<Vec<Snapshot>>), BAD_REQUEST],
    },
    Operation {
        id: OpId::GetSnapshot,
        method: Method::Get,
        path: "/v1/snapshots/{id}",
        tag: "snapshots",
        summary: "One snapshot",
        description: "The snapshot record, as `sandboxer snapshots get ID --json` prints it.",
        access: Access::Actor,
        cli: "sandboxer snapshots get ID",
        params: &[SNAPSHOT_ID],
        body: None,
        body_required: false,
        responses: &[ok(200, "The snapshot", schema_of::<Snapshot>), NOT_FOUND_SNAPSHOT],
    },
    Operation {
        id: OpId::DeleteSnapshot,
        method: Method::Delete,
        path: "/v1/snapshots/{id}",
        tag: "snapshots",
        summary: "Delete a snapshot",
        description: "Removes it from where it lives; the record ends `deleted` (kept as history, \
            with what its storage cost). 409 while it is being made or a create is restoring \
            it. Deleting a deleted snapshot returns it.",
        access: Access::Actor,
        cli: "sandboxer snapshots delete ID",
        params: &[SNAPSHOT_ID],
        body: None,
        body_required: false,
        responses: &[
            ok(200, "The snapshot, deleted", schema_of::<Snapshot>),
            NOT_FOUND_SNAPSHOT,
            err(409, "It is being made or restored"),
            err(502, "The host is unreachable"),
        ],
    },
    Operation {
        id: OpId::ListProfiles,
        method: Method::Get,
        path: "/v1/profiles",
        tag: "profiles",
        summary: "The profile catalog",
        description: "Built-in and user profiles, and whether this build can create each.",
        access: Access::Actor,
        cli: "sandboxer profiles list",
        params: &[],
        body: None,
        body_required: false,
        responses: &[ok(200, "The catalog", schema_of::<Vec<ProfileRow>>)],
    },
    Operation {
        id: OpId::GetProfile,
        method: Method::Get,
        path: "/v1/profiles/{id}",
        tag: "profiles",
        summary: "One profile in full",
        description: "Inputs, TTLs, policy, routes and where the profile came from.",
        access: Access::Actor,
        cli: "sandboxer profiles show ID",
        params: &[path("id", Kind::ProfileId, "The profile id")],
        body: None,
        body_required: false,
        responses: &[
            ok(200, "The profile", schema_of::<Profile>),
            err(404, "No such profile"),
        ],
    },
    Operation {
        id: OpId::ExplainRoute,
        method: Method::Get,
        path: "/v1/route/explain",
        tag: "profiles",
        summary: "Every placement candidate, chosen or rejected, and why",
        description: "The routing decision a create with these parameters would get now; creates \
            nothing. `agt` and `atm` tokens explain for themselves.",
        access: Access::Actor,
        cli: "sandboxer route explain",
        params: &[
            query(
                "profile",
                Kind::ProfileId,
                "The profile (default `profile.sandbox-canary`)",
            ),
            query("ttl", Kind::Duration, "The TTL the request would ask for"),
            query(
                "actor",
                Kind::Actor,
                "Who would ask (default: the token's actor)",
            ),
            query("host", Kind::String, "Place on this host and nowhere else"),
            query(
                "max_price",
                Kind::Amount,
                "Refuse routes dearer than this many credits per hour",
            ),
            query(
                "only",
                Kind::Extensions,
                "Only these extensions (repeatable)",
            ),
            query(
                "ignore",
                Kind::Extensions,
                "Never these extensions (repeatable)",
            ),
            query(
                "no_fallback",
                Kind::Bool,
                "Only the first candidate may be tried",
            ),
        ],
        body: None,
        body_required: false,
        responses: &[
            ok(200, "The decision", schema_of::<Decision>),
            BAD_REQUEST,
            err(
                403,
                "`actor` names another actor and the token is not `adm`",
            ),
            err(404, "No such profile or host"),
        ],
    },
    Operation {
        id: OpId::ListHosts,
        method: Method::Get,
        path: "/v1/hosts",
        tag: "hosts",
        summary: "Placement hosts and whether each answers",
        description: "`local` and the hosts of hosts.toml, with live sandboxes per host and a \
            connection attempt. `identity_file` is shown to `adm` tokens only.",
        access: Access::Actor,
        cli: "sandboxer hosts list",
        params: &[],
        body: None,
        body_required: false,
        responses: &[ok(200, "The hosts", schema_of::<Vec<HostRow>>)],
    },
    Operation {
        id: OpId::HostTelemetry,
        method: Method::Get,
        path: "/v1/hosts/{name}/telemetry",
        tag: "hosts",
        summary: "Host telemetry",
        description:
            "CPUs, load, memory, disk, kernel, docker and running canary venues, read now \
            through the host's transport.",
        access: Access::Admin,
        cli: "sandboxer inspect host NAME",
        params: &[path(
            "name",
            Kind::String,
            "The host (`local` or a hosts.toml name)",
        )],
        body: None,
        body_required: false,
        responses: &[
            ok(200, "The inventory", schema_of::<HostInventory>),
            err(404, "No such host"),
            err(502, "The host is unreachable"),
            err(504, "The host did not answer in time"),
        ],
    },
    Operation {
        id: OpId::InspectStale,
        method: Method::Get,
        path: "/v1/stale",
        tag: "reaper",
        summary: "Stale sandboxes and resources",
        description: "Expired, stuck, orphaned and ghost sandboxes; changes nothing.",
        access: Access::Admin,
        cli: "sandboxer inspect stale",
        params: &[query(
            "grace",
            Kind::Duration,
            "Leave alone anything younger than this (default 2m)",
        )],
        body: None,
        body_required: false,
        responses: &[ok(200, "What is stale", schema_of::<StaleReport>), BAD_REQUEST],
    },
    Operation {
        id: OpId::ReapStale,
        method: Method::Post,
        path: "/v1/reap-stale",
        tag: "reaper",
        summary: "End every stale sandbox",
        description: "Expired ones are destroyed (reason `expired`), stuck ones and ghosts closed \
            (reason `reaped`), orphans torn down. Idempotent. `ok` is false when an item could \
            not be reaped (the CLI exits 5 then). The server also runs this on an interval.",
        access: Access::Admin,
        cli: "sandboxer reap-stale",
        params: &[],
        body: Some(RequestBody::Json(schema_of::<routes::ReapBody>)),
        body_required: false,
        responses: &[ok(200, "What was done", schema_of::<ReapAnswer>), BAD_REQUEST],
    },
    Operation {
        id: OpId::CreditsBalance,
        method: Method::Get,
        path: "/v1/credits/balance",
        tag: "credits",
        summary: "An actor's account",
        description:
            "Available, held, spent and granted credits. `agt` and `atm` tokens see their \
            own account only.",
        access: Access::Actor,
        cli: "sandboxer credits balance",
        params: &[query(
            "actor",
            Kind::Actor,
            "Whose account (default: the token's actor)",
        )],
        body: None,
        body_required: false,
        responses: &[
            ok(200, "The account", schema_of::<Balance<'static>>),
            BAD_REQUEST,
            err(403, "Another actor's account, and the token is not `adm`"),
        ],
    },
    Operation {
        id: OpId::GrantCredits,
        method: Method::Post,
        path: "/v1/credits/grants",
        tag: "credits",
        summary: "Grant credits to an actor",
        description:
            "Only `adm` tokens grant; the grant is recorded as made by the token's actor. \
            `key` makes it idempotent: the same key is applied once (200 the second time).",
        access: Access::Admin,
        cli: "sandboxer credits grant --actor ACTOR AMOUNT",
        params: &[],
        body: Some(RequestBody::Json(schema_of::<routes::GrantBody>)),
        body_required: true,
        responses: &[
            ok(201, "Granted", schema_of::<GrantResult<'static>>),
            ok(
                200,
                "The key was applied before; nothing changed",
                schema_of::<GrantResult<'static>>,
            ),
            BAD_REQUEST,
            err(409, "The key was used for a different grant"),
        ],
    },
    Operation {
        id: OpId::CreditsLedger,
        method: Method::Get,
        path: "/v1/credits/ledger",
        tag: "credits",
        summary: "The ledger's entries, oldest first",
        description:
            "Grants, holds, extensions, settlements and voids. `agt` and `atm` tokens see \
            their own entries only.",
        access: Access::Actor,
        cli: "sandboxer credits ledger",
        params: &[
            query("actor", Kind::Actor, "Only this actor's entries"),
            query("sandbox", Kind::SandboxId, "Only this sandbox's entries"),
        ],
        body: None,
        body_required: false,
        responses: &[
            ok(200, "The entries", schema_of::<Vec<Entry>>),
            BAD_REQUEST,
            err(403, "Another actor's entries, and the token is not `adm`"),
        ],
    },
    Operation {
        id: OpId::CreditsUsage,
        method: Method::Get,
        path: "/v1/credits/usage",
        tag: "credits",
        summary: "Per metered sandbox: route, seconds, price, cost",
        description: "`agt` and `atm` tokens see their own usage only.",
        access: Access::Actor,
        cli: "sandboxer credits usage",
        params: &[query(
            "actor",
            Kind::Actor,
            "Whose usage (default: the token's actor)",
        )],
        body: None,
        body_required: false,
        responses: &[
            ok(200, "The usage", schema_of::<Usage<'static>>),
            BAD_REQUEST,
            err(403, "Another actor's usage, and the token is not `adm`"),
        ],
    },
    Operation {
        id: OpId::CreditsCheck,
        method: Method::Get,
        path: "/v1/credits/check",
        tag: "credits",
        summary: "Check the ledger's invariants",
        description: "No balance below zero; granted = available + held + spent; a hold resolved \
            once; a settle never above its hold. `ok` is false when any is broken (the CLI exits 8 \
            then).",
        access: Access::Admin,
        cli: "sandboxer credits check",
        params: &[],
        body: None,
        body_required: false,
        responses: &[ok(200, "The report", schema_of::<CheckAnswer>)],
    },
    Operation {
        id: OpId::UploadRepo,
        method: Method::Post,
        path: "/v1/uploads",
        tag: "uploads",
        summary: "Upload a repo for a create",
        description: "The body is a tar or gzip-compressed tar of the repo folder (`tar -czf - -C REPO .`), \
            at most the server's `--max-upload` bytes (413 beyond; an archive unpacks to at most four \
            times that). It is refused whole (400, naming the entry) at the first entry that is \
            absolute, has `..`, is a link leading out of the archive, a hard link, a device or a fifo. \
            The answer's `use_as` (`upload:upl-...`) is the `repo` input of a create. Only the \
            uploading actor can use or see it. It is removed when every sandbox made from it has \
            ended, or, unused, after the server's `--upload-retention` (default 1h).",
        access: Access::Actor,
        cli: "",
        params: &[],
        body: Some(RequestBody::Archive),
        body_required: true,
        responses: &[
            ok(201, "Unpacked and recorded", schema_of::<UploadView<'static>>),
            BAD_REQUEST,
            err(408, "The body did not arrive within the server's body deadline"),
            err(413, "Larger than the server takes (sent or unpacked)"),
        ],
    },
    Operation {
        id: OpId::ListUploads,
        method: Method::Get,
        path: "/v1/uploads",
        tag: "uploads",
        summary: "List uploads, oldest first",
        description: "The caller's uploads (`adm` tokens: every upload).",
        access: Access::Actor,
        cli: "",
        params: &[],
        body: None,
        body_required: false,
        responses: &[ok(200, "The uploads", schema_of::<Vec<UploadView<'static>>>)],
    },
    Operation {
        id: OpId::DeleteUpload,
        method: Method::Delete,
        path: "/v1/uploads/{id}",
        tag: "uploads",
        summary: "Delete an upload",
        description: "Removes an upload that no live sandbox uses (409 while one does). Another \
            actor's upload is 404, the same as a missing one.",
        access: Access::Actor,
        cli: "",
        params: &[path(
            "id",
            Kind::UploadId,
            "The upload id (`upl-...`). Another actor's upload is 404 for `agt` and `atm` tokens.",
        )],
        body: None,
        body_required: false,
        responses: &[
            ok(200, "Deleted", schema_of::<UploadView<'static>>),
            err(404, "No such upload (or it belongs to another actor)"),
            err(409, "A live sandbox uses it"),
        ],
    },
    // ---- E2B's sandbox lifecycle API (the front door; docs/e2b-compatibility.md)
    Operation {
        id: OpId::E2bCreateSandboxV2,
        method: Method::Post,
        path: "/v2/sandboxes",
        tag: "e2b",
        summary: "E2B: create a sandbox (the SDKs' create)",
        description: E2B_CREATE,
        access: Access::Actor,
        cli: "sandboxer create",
        params: &[],
        body: Some(RequestBody::Json(schema_of::<e2b::NewSandboxBody>)),
        body_required: true,
        responses: &E2B_CREATED,
    },
    Operation {
        id: OpId::E2bCreateSandbox,
        method: Method::Post,
        path: "/sandboxes",
        tag: "e2b",
        summary: "E2B: create a sandbox (the older route)",
        description: E2B_CREATE,
        access: Access::Actor,
        cli: "sandboxer create",
        params: &[],
        body: Some(RequestBody::Json(schema_of::<e2b::NewSandboxBody>)),
        body_required: true,
        responses: &E2B_CREATED,
    },
    Operation {
        id: OpId::E2bListSandboxesV2,
        method: Method::Get,
        path: "/v2/sandboxes",
        tag: "e2b",
        summary: "E2B: list running and paused sandboxes, a page at a time",
        description: "The caller's live sandboxes (every actor's for `adm` tokens), running and \
            paused unless `state` names one, newest first unless `order=asc`, filtered by \
            `metadata` (`key=value&key2=value2`, each part URL-encoded), `template` and \
            `startedAfter`. `X-Next-Token` holds the next page's `nextToken`; \
            `X-Total-Running` the number that match.",
        access: Access::Actor,
        cli: "sandboxer list --live",
        params: &[
            query("metadata", Kind::Metadata, "Metadata the sandboxes have: `key=value&key2=value2`"),
            query("state", Kind::E2bStates, "`running` and/or `paused`, comma-separated"),
            query("order", Kind::Order, "`desc` (newest first, the default) or `asc`"),
            query("startedAfter", Kind::Time, "Only sandboxes started at or after this time (RFC 3339)"),
            query("template", Kind::String, "Only sandboxes of this template (profile id or alias)"),
            query("nextToken", Kind::E2bCursor, "Where to continue: the `X-Next-Token` of the previous page"),
            query("limit", Kind::Limit, "At most this many sandboxes (default 100)"),
        ],
        body: None,
        body_required: false,
        responses: &[ok(200, "The sandboxes", schema_of::<Vec<sandboxer_core::e2b::SandboxDetail>>)],
    },
    Operation {
        id: OpId::E2bListSandboxes,
        method: Method::Get,
        path: "/sandboxes",
        tag: "e2b",
        summary: "E2B: list running sandboxes (the older route, one page)",
        description: "The caller's running sandboxes (not the paused ones), filtered by \
            `metadata`, every match in one answer.",
        access: Access::Actor,
        cli: "sandboxer list --live",
        params: &[query("metadata", Kind::Metadata, "Metadata the sandboxes have: `key=value&key2=value2`")],
        body: None,
        body_required: false,
        responses: &[ok(200, "The sandboxes", schema_of::<Vec<sandboxer_core::e2b::SandboxDetail>>)],
    },
    Operation {
        id: OpId::E2bGetSandbox,
        method: Method::Get,
        path: "/sandboxes/{sandboxID}",
        tag: "e2b",
        summary: "E2B: a running sandbox",
        description: "Its template (profile), times, resources (from the host telemetry it reported; \
            0 where none) and metadata. A sandbox that ended, or another actor's, is 404.",
        access: Access::Actor,
        cli: "sandboxer get ID",
        params: &[E2B_ID],
        body: None,
        body_required: false,
        responses: &[ok(200, "The sandbox", schema_of::<sandboxer_core::e2b::SandboxDetail>), E2B_NOT_FOUND],
    },
    Operation {
        id: OpId::E2bKillSandbox,
        method: Method::Delete,
        path: "/sandboxes/{sandboxID}",
        tag: "e2b",
        summary: "E2B: kill a sandbox",
        description: "Destroys it (as `sandboxer destroy`): 204 once it is torn down.",
        access: Access::Actor,
        cli: "sandboxer destroy ID",
        params: &[E2B_ID],
        body: None,
        body_required: false,
        responses: &[E2B_NO_CONTENT, E2B_NOT_FOUND],
    },
    Operation {
        id: OpId::E2bSetTimeout,
        method: Method::Post,
        path: "/sandboxes/{sandboxID}/timeout",
        tag: "e2b",
        summary: "E2B: end the sandbox `timeout` seconds from now",
        description: "Sooner or later than its deadline today, within its profile's maximum TTL \
            counted from its creation (400 beyond). A metered sandbox holds the extra time first.",
        access: Access::Actor,
        cli: "sandboxer extend-ttl ID",
        params: &[E2B_ID],
        body: Some(RequestBody::Json(schema_of::<e2b::TimeoutBody>)),
        body_required: true,
        responses: &[E2B_NO_CONTENT, E2B_NOT_FOUND],
    },
    Operation {
        id: OpId::E2bRefreshSandbox,
        method: Method::Post,
        path: "/sandboxes/{sandboxID}/refreshes",
        tag: "e2b",
        summary: "E2B: keep the sandbox alive `duration` seconds from now (default 60)",
        description: "The same as a timeout of `duration` seconds.",
        access: Access::Actor,
        cli: "sandboxer extend-ttl ID",
        params: &[E2B_ID],
        body: Some(RequestBody::Json(schema_of::<e2b::RefreshBody>)),
        body_required: false,
        responses: &[E2B_NO_CONTENT, E2B_NOT_FOUND],
    },
    Operation {
        id: OpId::E2bConnectSandbox,
        method: Method::Post,
        path: "/sandboxes/{sandboxID}/connect",
        tag: "e2b",
        summary: "E2B: connect to a running sandbox",
        description: E2B_CONNECT,
        access: Access::Actor,
        cli: "sandboxer get ID",
        params: &[E2B_ID],
        body: Some(RequestBody::Json(schema_of::<e2b::ConnectBody>)),
        body_required: false,
        responses: &[ok(200, "The sandbox", schema_of::<sandboxer_core::e2b::Sandbox>), E2B_NOT_FOUND],
    },
    Operation {
        id: OpId::E2bConnectSandboxV2,
        method: Method::Post,
        path: "/v2/sandboxes/{sandboxID}/connect",
        tag: "e2b",
        summary: "E2B: connect to a running sandbox (the SDKs' route)",
        description: E2B_CONNECT,
        access: Access::Actor,
        cli: "sandboxer get ID",
        params: &[E2B_ID],
        body: Some(RequestBody::Json(schema_of::<e2b::ConnectBody>)),
        body_required: false,
        responses: &[ok(200, "The sandbox", schema_of::<sandboxer_core::e2b::Sandbox>), E2B_NOT_FOUND],
    },
    Operation {
        id: OpId::E2bSandboxMetrics,
        method: Method::Get,
        path: "/sandboxes/{sandboxID}/metrics",
        tag: "e2b",
        summary: "E2B: the sandbox's resource use",
        description: "One sample: what its host reported when it became ready (the canary's \
            telemetry: CPUs and load, memory, disk); none where nothing was reported.",
        access: Access::Actor,
        cli: "sandboxer get ID",
        params: &[
            E2B_ID,
            query("start", Kind::String, "Unix seconds; accepted, the one sample is answered whatever the window"),
            query("end", Kind::String, "Unix seconds; accepted, the one sample is answered whatever the window"),
        ],
        body: None,
        body_required: false,
        responses: &[ok(200, "The samples", schema_of::<Vec<e2b::Metric>>), E2B_NOT_FOUND],
    },
    Operation {
        id: OpId::E2bPauseSandbox,
        method: Method::Post,
        path: "/sandboxes/{sandboxID}/pause",
        tag: "e2b",
        summary: "E2B: pause",
        description: "`sandboxer pause`: 204 once paused; 409 when it is already paused (the SDKs \
            read that as success). `memory` is accepted; what a pause keeps is the extension's \
            (docs/snapshots.md).",
        access: Access::Actor,
        cli: "sandboxer pause ID",
        params: &[E2B_ID],
        body: None,
        body_required: false,
        responses: &[
            E2B_NO_CONTENT,
            err(402, "The actor's credits do not cover the paused price"),
            E2B_NOT_FOUND,
            err(409, "Already paused"),
            err(501, "Its extension cannot pause"),
        ],
    },
    Operation {
        id: OpId::E2bResumeSandbox,
        method: Method::Post,
        path: "/sandboxes/{sandboxID}/resume",
        tag: "e2b",
        summary: "E2B: resume (E2B's older route; connect resumes too)",
        description: "`sandboxer resume`: `timeout` seconds from now when given, else the time it \
            had left. 201 with the sandbox; 409 when it is not paused; 402 (still paused) when \
            the credits do not cover the run.",
        access: Access::Actor,
        cli: "sandboxer resume ID [--ttl DURATION]",
        params: &[E2B_ID],
        body: Some(RequestBody::Json(schema_of::<e2b::ResumeBody>)),
        body_required: false,
        responses: &[
            ok(201, "Resumed", schema_of::<sandboxer_core::e2b::Sandbox>),
            err(402, "The actor's credits do not cover the run"),
            E2B_NOT_FOUND,
            err(409, "Not paused"),
        ],
    },
    Operation {
        id: OpId::E2bSnapshotSandbox,
        method: Method::Post,
        path: "/sandboxes/{sandboxID}/snapshots",
        tag: "e2b",
        summary: "E2B: snapshot",
        description: "`sandboxer snapshot`: 201 with E2B's `SnapshotInfo`; its `snapshotID` (a \
            `snap-...` id) or its name is a `templateID` that creates a sandbox from it.",
        access: Access::Actor,
        cli: "sandboxer snapshot ID [--name NAME]",
        params: &[E2B_ID],
        body: Some(RequestBody::Json(schema_of::<e2b::SnapshotBody>)),
        body_required: false,
        responses: &[
            ok(201, "The snapshot", schema_of::<sandboxer_core::e2b::SnapshotInfo>),
            E2B_NOT_FOUND,
            err(501, "Its extension cannot snapshot"),
        ],
    },
    Operation {
        id: OpId::E2bListSnapshots,
        method: Method::Get,
        path: "/snapshots",
        tag: "e2b",
        summary: "E2B: list snapshots",
        description: "The caller's ready snapshots, oldest first.",
        access: Access::Actor,
        cli: "sandboxer snapshots list --state ready",
        params: &[
            query("sandboxID", Kind::String, "Only the snapshots of this sandbox"),
            query("name", Kind::String, "Only the snapshot of this id or name"),
            query("limit", Kind::String, "Accepted; every snapshot is answered"),
            query("nextToken", Kind::String, "Accepted; there is one page"),
        ],
        body: None,
        body_required: false,
        responses: &[ok(200, "The snapshots", schema_of::<Vec<sandboxer_core::e2b::SnapshotInfo>>)],
    },
    Operation {
        id: OpId::E2bDeleteTemplate,
        method: Method::Delete,
        path: "/templates/{templateID}",
        tag: "e2b",
        summary: "E2B: delete a snapshot (a template)",
        description: "`sandboxer snapshots delete`: the caller's snapshot of this id or name; 204 \
            once deleted. Profiles are not deleted here: any other template is 404.",
        access: Access::Actor,
        cli: "sandboxer snapshots delete SNAP",
        params: &[path("templateID", Kind::String, "A snapshot's id (`snap-...`) or name")],
        body: None,
        body_required: false,
        responses: &[
            E2B_NO_CONTENT,
            err(404, "No snapshot of the caller's has this id or name"),
            err(409, "It is being restored"),
        ],
    },
];

/// The table holds every operation once, in the order of [`OpId`]: checked
/// when the crate compiles, so [`operation`] cannot miss.
const _: () = {
    assert!(
        OPERATIONS.len() == <OpId as strum::EnumCount>::COUNT,
        "an OpId without an operation in the table, or one too many"
    );
    let mut i = 0;
    while i < OPERATIONS.len() {
        assert!(
            OPERATIONS[i].id as usize == i,
            "the route table is not in the order of OpId"
        );
        i += 1;
    }
};

/// The operation with this id.
pub fn operation(id: OpId) -> &'static Operation {
    &OPERATIONS[id as usize]
}

fn kind_schema(k: Kind, g: &mut SchemaGenerator) -> Value {
    match k {
        Kind::String => json!({"type": "string", "minLength": 1}),
        Kind::SandboxId => {
            json!({"type": "string", "pattern": "^sbx-[a-z0-9]+$", "example": "sbx-q3v7k2m4xa"})
        }
        Kind::ProfileId => json!({"type": "string", "example": "profile.sandbox-canary"}),
        Kind::Actor => g.subschema_for::<Actor>().to_value(),
        Kind::Duration => g.subschema_for::<DurationText>().to_value(),
        Kind::Amount => g.subschema_for::<Micros>().to_value(),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::States => g.subschema_for::<Vec<State>>().to_value(),
        Kind::Extensions => {
            json!({"type": "array", "items": {"type": "string", "example": "ext.canary"}})
        }
        Kind::UploadId => {
            json!({"type": "string", "pattern": "^upl-[a-z0-9]+$", "example": "upl-q3v7k2m4xa"})
        }
        Kind::SnapshotId => {
            json!({"type": "string", "pattern": "^snap-[a-z0-9]+$", "example": "snap-q3v7k2m4xa"})
        }
        Kind::SnapshotStates => g.subschema_for::<Vec<SnapshotState>>().to_value(),
        Kind::Limit => json!({
            "type": "integer",
            "minimum": 1,
            "maximum": crate::routes::LIST_MAX,
            "default": crate::routes::LIST_DEFAULT,
        }),
        Kind::Cursor => json!({"type": "string", "example": "c4711"}),
        Kind::E2bStates => {
            json!({"type": "string", "enum": ["running", "paused", "running,paused"]})
        }
        Kind::Order => json!({"type": "string", "enum": ["asc", "desc"]}),
        Kind::Time => {
            json!({"type": "string", "format": "date-time", "example": "2026-01-01T00:00:00Z"})
        }
        Kind::Metadata => json!({"type": "string", "example": "team=a%2520b"}),
        Kind::E2bCursor => json!({"type": "string", "pattern": "^o[0-9]+$", "example": "o100"}),
    }
}

fn param_json(p: &Param, g: &mut SchemaGenerator) -> Value {
    let mut v = json!({
        "name": p.name,
        "in": match p.location { In::Path => "path", In::Query => "query" },
        "required": p.location == In::Path,
        "description": p.description,
        "schema": kind_schema(p.kind, g),
    });
    if matches!(p.kind, Kind::States | Kind::Extensions) {
        v["style"] = json!("form");
        v["explode"] = json!(true);
    }
    v
}

fn operation_json(op: &Operation, g: &mut Generators) -> Value {
    let mut responses = Map::new();
    let e2b = op.tag == "e2b";
    let mut add = |status: u16, description: &str, body: RespBody| {
        let key = status.to_string();
        if responses.contains_key(&key) {
            return;
        }
        // An E2B route's error is E2B's body, inline, described as the
        // shared responses describe its status.
        let description = match description {
            "" => error_description(status),
            given => given,
        };
        let json = |schema: Schema| {
            json!({
                "description": description,
                "content": {"application/json": {"schema": schema}}
            })
        };
        let r = match body {
            RespBody::Empty => json!({"description": description}),
            RespBody::Json(schema) => json(schema(&mut g.serialize)),
            RespBody::Error if e2b => json(
                g.serialize
                    .subschema_for::<sandboxer_core::e2b::ErrorBody>(),
            ),
            RespBody::Error => {
                json!({"$ref": format!("#/components/responses/{}", error_response_name(status))})
            }
        };
        responses.insert(key, r);
    };
    for r in op.responses {
        add(r.status, r.description, r.body);
    }
    if op.access != Access::Public {
        add(401, "", RespBody::Error);
        if op.access == Access::Admin {
            add(403, "", RespBody::Error);
        }
        if !op.params.iter().all(|p| p.location == In::Path) || op.body.is_some() {
            add(400, "", RespBody::Error);
        }
        if op.body.is_some() {
            add(408, "", RespBody::Error);
            add(413, "", RespBody::Error);
        }
        add(500, "", RespBody::Error);
    }
    let mut v = json!({
        "operationId": op.id.as_str(),
        "tags": [op.tag],
        "summary": op.summary,
        "description": op.description,
        "x-sandboxer-access": op.access.as_str(),
        "responses": Value::Object(responses),
    });
    if !op.cli.is_empty() {
        v["x-sandboxer-cli"] = json!(op.cli);
    }
    if op.access == Access::Public {
        v["security"] = json!([]);
    }
    if !op.params.is_empty() {
        v["parameters"] = Value::Array(
            op.params
                .iter()
                .map(|p| param_json(p, &mut g.serialize))
                .collect(),
        );
    }
    if op.tag == "e2b" {
        v["security"] = json!([{"apiKey": []}, {"bearer": []}]);
    }
    if matches!(
        op.id,
        OpId::CreateSandbox | OpId::E2bCreateSandbox | OpId::E2bCreateSandboxV2
    ) {
        let params = v
            .as_object_mut()
            .expect("object")
            .entry("parameters")
            .or_insert_with(|| json!([]));
        params.as_array_mut().expect("array").push(json!({
            "name": "Idempotency-Key",
            "in": "header",
            "required": false,
            "description": "The same as the body's `idempotency_key` (1 to 200 characters); when both are given they must be equal",
            "schema": {"type": "string", "minLength": 1, "maxLength": 200},
        }));
    }
    match op.body {
        Some(RequestBody::Archive) => {
            let binary = json!({"schema": g.deserialize.subschema_for::<RepoArchive>()});
            v["requestBody"] = json!({
                "required": op.body_required,
                "content": {"application/x-tar": binary, "application/gzip": binary, "application/octet-stream": binary},
            });
        }
        Some(RequestBody::Json(schema)) => {
            v["requestBody"] = json!({
                "required": op.body_required,
                "content": {"application/json": {"schema": schema(&mut g.deserialize)}},
            });
        }
        None => {}
    }
    v
}

fn error_response_name(status: u16) -> &'static str {
    match status {
        400 => "BadRequest",
        401 => "Unauthorized",
        402 => "InsufficientCredits",
        403 => "Forbidden",
        404 => "NotFound",
        408 => "RequestTimeout",
        409 => "Conflict",
        413 => "PayloadTooLarge",
        500 => "Internal",
        501 => "Unsupported",
        502 => "BadGateway",
        503 => "NoPlacement",
        504 => "Timeout",
        _ => "Error",
    }
}

/// What an error status means, as the shared responses say it.
fn error_description(status: u16) -> &'static str {
    ERRORS
        .iter()
        .find(|(s, _)| *s == status)
        .map_or("An error", |(_, d)| d)
}

const ERRORS: [(u16, &str); 13] = [
        (400, "Invalid input: a parameter or the body is wrong (`invalid_input`), or malformed JSON; the message says what and where"),
        (401, "No token, or a token that is unknown or revoked (`unauthorized`)"),
        (402, "The actor's credits do not cover it (`insufficient_credits`)"),
        (403, "The token's actor may not do this (`forbidden`)"),
        (404, "Not found (`not_found`): no such sandbox, profile or host; another actor's sandbox is also 404"),
        (408, "The request's body did not arrive within the server's body deadline (`timeout`); the connection is closed"),
        (409, "Conflicts with the current state (`conflict`)"),
        (413, "The body is larger than the server takes (`invalid_input`)"),
        (500, "The store or ledger is corrupt (`store_corrupt`, left untouched), an I/O error (`io`) or a bug (`internal`)"),
        (501, "Unsupported by this build or extension (`unsupported`)"),
        (502, "Provisioning or teardown failed (`provision_failed`) or a host or provider is unreachable (`unreachable`)"),
        (503, "No placement: every host or provider is full, unreachable or excluded (`no_placement`)"),
        (504, "Timed out (`timeout`)"),
];

fn error_responses(g: &mut SchemaGenerator) -> Value {
    let error = g.subschema_for::<ErrorBody<'static>>();
    let mut m = Map::new();
    for (status, description) in ERRORS {
        m.insert(
            error_response_name(status).to_string(),
            json!({
                "description": description,
                "content": {"application/json": {"schema": error}},
            }),
        );
    }
    Value::Object(m)
}

/// The two generators of the document: responses are described as the
/// handlers serialize them, request bodies as they are read.
struct Generators {
    serialize: SchemaGenerator,
    deserialize: SchemaGenerator,
}

fn generator(contract: Contract) -> SchemaGenerator {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas/".into();
    settings.meta_schema = None;
    if contract == Contract::Serialize {
        // A default says what a reader assumes for a field left out; an
        // answer writes every field it has.
        settings
            .transforms
            .push(Box::new(RecursiveTransform(|s: &mut Schema| {
                s.remove("default");
            })));
    }
    settings.contract = contract;
    settings.into_generator()
}

impl Generators {
    /// `components/schemas`: the named schemas both generators made. A
    /// name is one schema: a type described differently when read and when
    /// written must be named apart.
    fn schemas(&mut self) -> Value {
        let mut all = self.serialize.take_definitions(true);
        for (name, schema) in self.deserialize.take_definitions(true) {
            match all.get(&name) {
                Some(other) if *other != schema => {
                    panic!("`{name}` is read and written differently; name the two types apart")
                }
                _ => {
                    all.insert(name, schema);
                }
            }
        }
        Value::Object(all)
    }
}

/// The document itself, as `GET /openapi.json` answers it.
struct OpenApiDocument;

impl JsonSchema for OpenApiDocument {
    fn schema_name() -> Cow<'static, str> {
        "OpenApiDocument".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "object", "description": "An OpenAPI 3.1 document."})
    }
}

/// A repo archive as `POST /v1/uploads` reads it.
struct RepoArchive;

impl JsonSchema for RepoArchive {
    fn schema_name() -> Cow<'static, str> {
        "RepoArchive".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "binary",
            "description": "A tar archive of the repo folder, optionally gzip-compressed",
        })
    }
}

/// The whole document (built once).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

fn build() -> Value {
    let mut g = Generators {
        serialize: generator(Contract::Serialize),
        deserialize: generator(Contract::Deserialize),
    };
    let mut paths = Map::new();
    for op in OPERATIONS {
        let item = paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        item[op.method.as_str()] = operation_json(op, &mut g);
    }
    let responses = error_responses(&mut g.serialize);
    let schemas = g.schemas();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "sandboxer HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The operations of the `sandboxer` CLI over HTTP, with the same semantics and error kinds. \
                Every /v1 route takes `Authorization: Bearer TOKEN` (tokens from `sandboxer tokens add --actor ACTOR`). \
                `adm` tokens act on everything; `agt` and `atm` tokens see and act on their own sandboxes only \
                (another actor's sandbox is 404). Errors are `{\"code\", \"message\", \"hint\"}`. See docs/http-api.md.",
        },
        "tags": [
            {"name": "meta"},
            {"name": "sandboxes"},
            {"name": "dashboard"},
            {"name": "profiles"},
            {"name": "hosts"},
            {"name": "reaper"},
            {"name": "credits"},
            {"name": "uploads"},
            {"name": "e2b", "description": "E2B's sandbox lifecycle API, for the E2B SDKs (docs/e2b-compatibility.md)"},
        ],
        "security": [{"bearer": []}],
        "paths": Value::Object(paths),
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "A token from `sandboxer tokens add` (`sbxt_...`)"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "A sandboxer token as E2B's API key (the E2B SDKs' E2B_API_KEY)"},
            },
            "responses": responses,
            "schemas": schemas,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_id_is_in_the_table_once() {
        use strum::IntoEnumIterator as _;
        for id in OpId::iter() {
            let n = OPERATIONS.iter().filter(|o| o.id == id).count();
            assert_eq!(n, 1, "{id} is in the table {n} times");
            assert_eq!(operation(id).id, id);
        }
        assert_eq!(OPERATIONS.len(), OpId::iter().count());
    }

    #[test]
    fn ids_are_unique_and_every_path_parameter_is_declared() {
        let mut ids: Vec<&str> = OPERATIONS.iter().map(|o| o.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), OPERATIONS.len());
        for op in OPERATIONS {
            let in_path: Vec<&str> = op
                .path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            let declared: Vec<&str> = op
                .params
                .iter()
                .filter(|p| p.location == In::Path)
                .map(|p| p.name)
                .collect();
            assert_eq!(in_path, declared, "{}", op.id);
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("\"$ref\":\"#/") {
            let tail = &rest[i + 10..];
            let end = tail.find('"').unwrap();
            let pointer = format!("/{}", &tail[..end]);
            assert!(doc.pointer(&pointer).is_some(), "dangling $ref #{pointer}");
            rest = &tail[end..];
        }
    }
}
