//! The route table and the OpenAPI document built from it.
//!
//! [`OPERATIONS`] is the one list of what the server offers: method, path,
//! parameters, body, responses, who may call it and the CLI command it
//! mirrors. [`crate::router`] mounts exactly these operations (a handler per
//! operation id) and query strings are checked against their parameters, so
//! the document served at `/openapi.json` cannot drift from the routes.
//! `docs/openapi.json` is a copy a test keeps equal.

use std::sync::OnceLock;

use sandboxer_core::ErrorKind;
use serde_json::{json, Map, Value};

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

/// One documented response.
#[derive(Debug, Clone, Copy)]
pub struct Resp {
    pub status: u16,
    pub description: &'static str,
    /// A schema in `components/schemas`; `None` for the error body.
    pub schema: Option<&'static str>,
}

/// Every operation of the API, by its OpenAPI `operationId`. The router
/// matches on it exhaustively, so an operation without a handler does not
/// compile.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::Display, strum::EnumIter,
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
    /// The request body's schema (the body is optional when `body_required`
    /// is false: an empty body is `{}`).
    pub body: Option<&'static str>,
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

const fn ok(status: u16, description: &'static str, schema: &'static str) -> Resp {
    Resp {
        status,
        description,
        schema: Some(schema),
    }
}

const fn err(status: u16, description: &'static str) -> Resp {
    Resp {
        status,
        description,
        schema: None,
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
    "E2bError",
);
const E2B_NO_CONTENT: Resp = ok(204, "Done", "Empty");
const E2B_CREATED: [Resp; 4] = [
    ok(
        201,
        "Created and running (or the one the Idempotency-Key made)",
        "E2bSandbox",
    ),
    ok(404, "No template of that name", "E2bError"),
    ok(402, "The actor's credits do not cover the hold", "E2bError"),
    ok(503, "No route can place it now", "E2bError"),
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
        responses: &[ok(200, "The server runs", "Health")],
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
        responses: &[ok(200, "The document", "OpenApiDocument")],
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
        responses: &[ok(200, "The caller", "WhoAmI")],
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
        body: Some("CreateSandbox"),
        body_required: false,
        responses: &[
            ok(201, "Created and ready", "Sandbox"),
            ok(200, "The idempotency key's existing sandbox", "Sandbox"),
            ok(
                202,
                "Recorded; provisioning goes on (`wait: false`)",
                "Sandbox",
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
        responses: &[ok(200, "The records", "SandboxList"), BAD_REQUEST],
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
        responses: &[ok(200, "The dashboard's data", "DashboardData"), BAD_REQUEST],
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
        responses: &[ok(200, "The record", "Sandbox"), NOT_FOUND_SANDBOX],
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
            ok(200, "The record, destroyed", "Sandbox"),
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
        body: Some("RecreateSandbox"),
        body_required: false,
        responses: &[
            ok(201, "The new sandbox, ready", "Sandbox"),
            ok(
                202,
                "The new sandbox, provisioning (`wait: false`)",
                "Sandbox",
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
        body: Some("ExtendTtl"),
        body_required: true,
        responses: &[
            ok(200, "The record with its new expiry", "Sandbox"),
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
            ok(200, "The record, paused", "Sandbox"),
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
        body: Some("ResumeSandbox"),
        body_required: false,
        responses: &[
            ok(200, "The record, ready", "Sandbox"),
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
        body: Some("SnapshotSandbox"),
        body_required: false,
        responses: &[
            ok(201, "The snapshot, ready", "Snapshot"),
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
        responses: &[ok(200, "The snapshots", "SnapshotList"), BAD_REQUEST],
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
        responses: &[ok(200, "The snapshot", "Snapshot"), NOT_FOUND_SNAPSHOT],
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
            ok(200, "The snapshot, deleted", "Snapshot"),
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
        responses: &[ok(200, "The catalog", "ProfileList")],
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
            ok(200, "The profile", "Profile"),
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
            ok(200, "The decision", "Decision"),
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
        responses: &[ok(200, "The hosts", "HostList")],
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
            ok(200, "The inventory", "HostInventory"),
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
        responses: &[ok(200, "What is stale", "StaleReport"), BAD_REQUEST],
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
        body: Some("ReapRequest"),
        body_required: false,
        responses: &[ok(200, "What was done", "ReapReport"), BAD_REQUEST],
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
            ok(200, "The account", "Balance"),
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
        body: Some("GrantRequest"),
        body_required: true,
        responses: &[
            ok(201, "Granted", "GrantResult"),
            ok(
                200,
                "The key was applied before; nothing changed",
                "GrantResult",
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
            ok(200, "The entries", "LedgerEntries"),
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
            ok(200, "The usage", "Usage"),
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
        responses: &[ok(200, "The report", "CheckReport")],
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
        body: Some("RepoArchive"),
        body_required: true,
        responses: &[
            ok(201, "Unpacked and recorded", "Upload"),
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
        responses: &[ok(200, "The uploads", "UploadList")],
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
            ok(200, "Deleted", "Upload"),
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
        body: Some("E2bNewSandbox"),
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
        body: Some("E2bNewSandbox"),
        body_required: true,
        responses: &E2B_CREATED,
    },
    Operation {
        id: OpId::E2bListSandboxesV2,
        method: Method::Get,
        path: "/v2/sandboxes",
        tag: "e2b",
        summary: "E2B: list running sandboxes, a page at a time",
        description: "The caller's running sandboxes (every actor's for `adm` tokens), newest first \
            unless `order=asc`, filtered by `metadata` (`key=value&key2=value2`, each part \
            URL-encoded), `template` and `startedAfter`. `X-Next-Token` holds the next page's \
            `nextToken`; `X-Total-Running` the number that match. Nothing is ever `paused`.",
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
        responses: &[ok(200, "The sandboxes", "E2bListedSandboxes")],
    },
    Operation {
        id: OpId::E2bListSandboxes,
        method: Method::Get,
        path: "/sandboxes",
        tag: "e2b",
        summary: "E2B: list running sandboxes (the older route, one page)",
        description: "As `GET /v2/sandboxes`, every match in one answer.",
        access: Access::Actor,
        cli: "sandboxer list --live",
        params: &[query("metadata", Kind::Metadata, "Metadata the sandboxes have: `key=value&key2=value2`")],
        body: None,
        body_required: false,
        responses: &[ok(200, "The sandboxes", "E2bListedSandboxes")],
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
        responses: &[ok(200, "The sandbox", "E2bSandboxDetail"), E2B_NOT_FOUND],
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
        body: Some("E2bTimeout"),
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
        body: Some("E2bRefresh"),
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
        body: Some("E2bConnect"),
        body_required: false,
        responses: &[ok(200, "The sandbox", "E2bSandbox"), E2B_NOT_FOUND],
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
        body: Some("E2bConnect"),
        body_required: false,
        responses: &[ok(200, "The sandbox", "E2bSandbox"), E2B_NOT_FOUND],
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
        responses: &[ok(200, "The samples", "E2bMetrics"), E2B_NOT_FOUND],
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
        body: Some("E2bConnect"),
        body_required: false,
        responses: &[
            ok(201, "Resumed", "E2bSandbox"),
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
        body: Some("SnapshotSandbox"),
        body_required: false,
        responses: &[
            ok(201, "The snapshot", "E2bSnapshotInfo"),
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
        responses: &[ok(200, "The snapshots", "E2bSnapshots")],
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

/// The operation with this id (every [`OpId`] is in the table: a test
/// walks them all).
pub fn operation(id: OpId) -> &'static Operation {
    OPERATIONS
        .iter()
        .find(|o| o.id == id)
        .unwrap_or_else(|| panic!("no operation `{id}` in the route table"))
}

fn kind_schema(k: Kind) -> Value {
    match k {
        Kind::String => json!({"type": "string", "minLength": 1}),
        Kind::SandboxId => {
            json!({"type": "string", "pattern": "^sbx-[a-z0-9]+$", "example": "sbx-q3v7k2m4xa"})
        }
        Kind::ProfileId => json!({"type": "string", "example": "profile.sandbox-canary"}),
        Kind::Actor => json!({"$ref": "#/components/schemas/Actor"}),
        Kind::Duration => json!({"$ref": "#/components/schemas/Duration"}),
        Kind::Amount => json!({"$ref": "#/components/schemas/Amount"}),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::States => json!({"type": "array", "items": {"$ref": "#/components/schemas/State"}}),
        Kind::Extensions => {
            json!({"type": "array", "items": {"type": "string", "example": "ext.canary"}})
        }
        Kind::UploadId => {
            json!({"type": "string", "pattern": "^upl-[a-z0-9]+$", "example": "upl-q3v7k2m4xa"})
        }
        Kind::SnapshotId => {
            json!({"type": "string", "pattern": "^snap-[a-z0-9]+$", "example": "snap-q3v7k2m4xa"})
        }
        Kind::SnapshotStates => {
            json!({"type": "array", "items": {"type": "string", "enum": ["creating", "ready", "failed", "deleted"]}})
        }
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

fn param_json(p: &Param) -> Value {
    let mut v = json!({
        "name": p.name,
        "in": match p.location { In::Path => "path", In::Query => "query" },
        "required": p.location == In::Path,
        "description": p.description,
        "schema": kind_schema(p.kind),
    });
    if matches!(p.kind, Kind::States | Kind::Extensions) {
        v["style"] = json!("form");
        v["explode"] = json!(true);
    }
    v
}

fn operation_json(op: &Operation) -> Value {
    let mut responses = Map::new();
    let mut add = |status: u16, description: &str, schema: Option<&str>| {
        let key = status.to_string();
        if responses.contains_key(&key) {
            return;
        }
        let schema = match schema {
            None if op.tag == "e2b" => Some("E2bError"),
            other => other,
        };
        let r = match schema {
            Some("Empty") => json!({"description": description}),
            Some(s) => json!({
                "description": description,
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{s}")}}}
            }),
            None => {
                json!({"$ref": format!("#/components/responses/{}", error_response_name(status))})
            }
        };
        responses.insert(key, r);
        let _ = description;
    };
    for r in op.responses {
        add(r.status, r.description, r.schema);
    }
    if op.access != Access::Public {
        add(401, "", None);
        if op.access == Access::Admin {
            add(403, "", None);
        }
        if !op.params.iter().all(|p| p.location == In::Path) || op.body.is_some() {
            add(400, "", None);
        }
        if op.body.is_some() {
            add(408, "", None);
            add(413, "", None);
        }
        add(500, "", None);
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
        v["parameters"] = Value::Array(op.params.iter().map(param_json).collect());
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
    if op.body == Some("RepoArchive") {
        let binary = json!({"schema": {"$ref": "#/components/schemas/RepoArchive"}});
        v["requestBody"] = json!({
            "required": op.body_required,
            "content": {"application/x-tar": binary, "application/gzip": binary, "application/octet-stream": binary},
        });
    } else if let Some(body) = op.body {
        v["requestBody"] = json!({
            "required": op.body_required,
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}},
        });
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

fn error_responses() -> Value {
    let table: [(u16, &str); 13] = [
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
    let mut m = Map::new();
    for (status, description) in table {
        m.insert(
            error_response_name(status).to_string(),
            json!({
                "description": description,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }),
        );
    }
    Value::Object(m)
}

fn nullable(schema: Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

fn nullable_ref(name: &str) -> Value {
    nullable(json!({"$ref": format!("#/components/schemas/{name}")}))
}

fn time() -> Value {
    json!({"type": "string", "format": "date-time"})
}

fn schemas() -> Value {
    let kinds: Vec<&str> = [
        ErrorKind::NotFound,
        ErrorKind::InvalidInput,
        ErrorKind::InvalidConfig,
        ErrorKind::Conflict,
        ErrorKind::Unsupported,
        ErrorKind::Unreachable,
        ErrorKind::Timeout,
        ErrorKind::NoPlacement,
        ErrorKind::ProvisionFailed,
        ErrorKind::InsufficientCredits,
        ErrorKind::StoreCorrupt,
        ErrorKind::Unauthorized,
        ErrorKind::Forbidden,
        ErrorKind::Io,
        ErrorKind::Internal,
    ]
    .iter()
    .map(|k| k.as_str())
    .collect();
    let string = json!({"type": "string"});
    let opt_string = nullable(string.clone());
    let opt_time = nullable(time());
    let string_map = json!({"type": "object", "additionalProperties": {"type": "string"}});
    json!({
        "Error": {
            "type": "object",
            "description": "Every error: the kind (the same names as the CLI's `--json` errors), a message for people and an optional hint.",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "enum": kinds},
                "message": string,
                "hint": string,
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "version"],
            "properties": {"status": {"type": "string", "enum": ["ok"]}, "version": string},
        },
        "OpenApiDocument": {"type": "object", "description": "An OpenAPI 3.1 document."},
        "WhoAmI": {
            "type": "object",
            "required": ["actor", "token"],
            "properties": {"actor": {"$ref": "#/components/schemas/Actor"}, "token": {"type": "string", "description": "The token's name (never its secret)"}},
        },
        "Actor": {
            "type": "string",
            "description": "`adm:NAME` (operator), `agt:NAME` (agent) or `atm:NAME` (automation); NAME is 1-64 of letters, digits, `.`, `_`, `-`, `@`.",
            "pattern": "^(adm|agt|atm):[A-Za-z0-9._@-]{1,64}$",
            "example": "agt:harness",
        },
        "Duration": {
            "type": "string",
            "description": "A duration with units: `90s`, `30m`, `2h`, `1d`, `1h30m`.",
            "pattern": "^([0-9]+[smhd])+$",
            "example": "30m",
        },
        "Amount": {
            "type": "string",
            "description": "Credits: a non-negative decimal with at most 6 places.",
            "pattern": "^[0-9]+(\\.[0-9]{1,6})?$",
            "example": "2.5",
        },
        "State": {"type": "string", "enum": ["provisioning", "ready", "pausing", "paused", "resuming", "destroying", "destroyed", "failed"]},
        "CreateSandbox": {
            "type": "object",
            "additionalProperties": false,
            "description": "The same as `sandboxer create`'s options. Every field is optional; `{}` creates the canary on the default host.",
            "properties": {
                "profile": {"type": "string", "default": "profile.sandbox-canary", "example": "profile.sandbox-canary"},
                "inputs": {"type": "object", "additionalProperties": {"type": "string"}, "description": "The profile's inputs (`--input NAME=VALUE`)"},
                "ttl": {"$ref": "#/components/schemas/Duration"},
                "actor": {"$ref": "#/components/schemas/Actor"},
                "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 200},
                "wait": {"type": "boolean", "default": true, "description": "Wait until ready (false: answer 202 as soon as it is recorded; the server finishes provisioning)"},
                "host": {"type": "string", "description": "Place on this host and nowhere else", "example": "local"},
                "max_price": {"$ref": "#/components/schemas/Amount"},
                "only": {"type": "array", "items": {"type": "string"}, "description": "Only these extensions"},
                "ignore": {"type": "array", "items": {"type": "string"}, "description": "Never these extensions"},
                "no_fallback": {"type": "boolean", "default": false},
                "from_snapshot": {"type": "string", "pattern": "^snap-[a-z0-9]+$", "description": "Restore this snapshot: the profile is the snapshot's (`profile` may be left out, or must match), and the sandbox is placed where the snapshot lives"},
            },
        },
        "ResumeSandbox": {
            "type": "object",
            "additionalProperties": false,
            "properties": {"ttl": {"allOf": [{"$ref": "#/components/schemas/Duration"}], "description": "Run this long from now instead of the time it had left"}},
        },
        "SnapshotSandbox": {
            "type": "object",
            "additionalProperties": false,
            "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 128}},
        },
        "Snapshot": {
            "type": "object",
            "description": "A snapshot record, exactly as `sandboxer snapshots get ID --json` prints it.",
            "required": ["id", "source", "profile", "profile_version", "extension", "host", "actor", "state", "created_at", "updated_at"],
            "properties": {
                "id": {"type": "string", "pattern": "^snap-[a-z0-9]+$"},
                "name": {"type": "string"},
                "source": {"type": "string", "description": "The sandbox it was taken of"},
                "profile": {"type": "string"},
                "profile_version": {"type": "integer", "minimum": 1},
                "extension": {"type": "string"},
                "host": {"type": "string", "description": "Where it lives (the provider's name for a SaaS extension)"},
                "location": {"type": "string", "description": "Where on it: a folder, an image, a provider's id"},
                "size_bytes": {"type": "integer", "minimum": 0},
                "actor": {"$ref": "#/components/schemas/Actor"},
                "state": {"type": "string", "enum": ["creating", "ready", "failed", "deleted"]},
                "reason": {"type": "string", "description": "Why it failed"},
                "created_at": time(),
                "ready_at": time(),
                "deleted_at": time(),
                "updated_at": time(),
                "storage_price_per_hour": {"$ref": "#/components/schemas/Amount"},
                "storage_cost": {"$ref": "#/components/schemas/Amount"},
                "worker": {"type": "object", "description": "The process making it", "properties": {"pid": {"type": "integer"}, "boot_id": {"type": "string"}}},
            },
        },
        "SnapshotList": {"type": "array", "items": {"$ref": "#/components/schemas/Snapshot"}},
        "RecreateSandbox": {
            "type": "object",
            "additionalProperties": false,
            "properties": {"wait": {"type": "boolean", "default": true}},
        },
        "ExtendTtl": {
            "type": "object",
            "additionalProperties": false,
            "required": ["by"],
            "properties": {"by": {"$ref": "#/components/schemas/Duration"}},
        },
        "ReapRequest": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "dry_run": {"type": "boolean", "default": false, "description": "Say what would be done; change nothing"},
                "grace": {"allOf": [{"$ref": "#/components/schemas/Duration"}], "default": "2m"},
            },
        },
        "GrantRequest": {
            "type": "object",
            "additionalProperties": false,
            "required": ["actor", "amount"],
            "properties": {
                "actor": {"$ref": "#/components/schemas/Actor"},
                "amount": {"anyOf": [{"$ref": "#/components/schemas/Amount"}, {"type": "integer", "minimum": 1}], "description": "Above zero"},
                "key": {"type": "string", "minLength": 1, "description": "Makes the grant idempotent"},
            },
        },
        "Sandbox": {
            "type": "object",
            "description": "The sandbox record, exactly as `sandboxer get ID --json` prints it. Field names are a contract; more fields may be added.",
            "required": ["id", "profile", "profile_version", "extension", "host", "state", "reason", "actor",
                         "created_at", "ready_at", "expires_at", "ended_at", "inputs", "reachability", "route",
                         "recreated_from", "recreated_as", "cost", "ttl_seconds"],
            "properties": {
                "id": {"type": "string", "example": "sbx-q3v7k2m4xa"},
                "profile": string,
                "profile_version": {"type": "integer", "minimum": 1},
                "extension": string,
                "host": string,
                "state": {"$ref": "#/components/schemas/State"},
                "reason": {"anyOf": [{"type": "string"}, {"type": "null"}], "description": "`destroyed`, `expired`, `reaped`, `recreated` or `failed: ...`"},
                "actor": {"$ref": "#/components/schemas/Actor"},
                "created_at": time(),
                "updated_at": time(),
                "ready_at": opt_time,
                "expires_at": opt_time,
                "ended_at": opt_time,
                "inputs": string_map,
                "reachability": nullable_ref("Reachability"),
                "route": {"$ref": "#/components/schemas/RouteTrace"},
                "recreated_from": opt_string,
                "recreated_as": opt_string,
                "cost": nullable_ref("Cost"),
                "ttl_seconds": {"type": "integer", "minimum": 0},
                "idempotency_key": string,
                "telemetry": {"type": "object", "description": "Host telemetry the sandbox reported (canary)"},
                "worker": {"type": "object", "description": "The process provisioning it", "properties": {"pid": {"type": "integer"}, "boot_id": string}},
                "metadata": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Labels its creator attached (E2B's metadata); absent when none"},
                "from_snapshot": {"type": "string", "description": "The snapshot it was created from"},
                "paused_at": time(),
                "ttl_remaining_seconds": {"type": "integer", "minimum": 0, "description": "While paused: the running time it has left"},
                "resumed_at": time(),
                "paused_seconds": {"type": "integer", "minimum": 0, "description": "Seconds spent paused, over all its pauses; absent when none"},
                "expired": {"type": "boolean", "const": true, "description": "Present on a provisioning or ready sandbox past its deadline: the next reaper pass ends it `expired` (derived when shown, never stored)"},
            },
        },
        "SandboxList": {"type": "array", "items": {"$ref": "#/components/schemas/Sandbox"}},
        "E2bError": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "integer", "description": "The HTTP status"},
                "message": string,
                "error_code": {"type": "string", "description": "sandboxer's error kind"},
            },
        },
        "E2bNewSandbox": {
            "type": "object",
            "required": ["templateID"],
            "properties": {
                "templateID": {"type": "string", "example": "canary"},
                "timeout": {"type": "integer", "minimum": 1, "description": "The TTL in seconds"},
                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                "envVars": {"type": "object", "additionalProperties": {"type": "string"}, "description": "The profile's inputs"},
                "autoPause": {"type": "boolean", "description": "Only false"},
                "volumeMounts": {"type": "array", "maxItems": 0},
            },
        },
        "E2bSandbox": {
            "type": "object",
            "required": ["templateID", "sandboxID", "clientID", "envdVersion"],
            "properties": {
                "templateID": {"type": "string", "description": "The profile id"},
                "sandboxID": string,
                "alias": {"type": "string", "description": "The template name asked for, when not the profile id"},
                "clientID": string,
                "envdVersion": {"type": "string", "description": "What the SDKs need to accept the sandbox; no envd runs"},
                "domain": {"type": ["string", "null"]},
            },
        },
        "E2bSandboxDetail": {
            "type": "object",
            "required": ["templateID", "sandboxID", "clientID", "startedAt", "endAt", "envdVersion", "cpuCount", "memoryMB", "diskSizeMB", "state"],
            "properties": {
                "templateID": string,
                "sandboxID": string,
                "clientID": string,
                "startedAt": {"type": "string", "format": "date-time"},
                "endAt": {"type": "string", "format": "date-time"},
                "envdVersion": string,
                "cpuCount": {"type": "integer"},
                "memoryMB": {"type": "integer"},
                "diskSizeMB": {"type": "integer"},
                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                "state": {"type": "string", "enum": ["running", "paused"]},
                "domain": {"type": ["string", "null"]},
            },
        },
        "E2bListedSandboxes": {"type": "array", "items": {"$ref": "#/components/schemas/E2bSandboxDetail"}},
        "E2bTimeout": {
            "type": "object",
            "required": ["timeout"],
            "properties": {"timeout": {"type": "integer", "minimum": 1, "description": "Seconds from now"}},
        },
        "E2bRefresh": {
            "type": "object",
            "properties": {"duration": {"type": "integer", "minimum": 1, "description": "Seconds from now (default 60)"}},
        },
        "E2bConnect": {
            "type": "object",
            "properties": {"timeout": {"type": "integer", "minimum": 1, "description": "Seconds from now"}},
        },
        "E2bMetrics": {"type": "array", "items": {
            "type": "object",
            "required": ["timestamp", "timestampUnix", "cpuCount", "cpuUsedPct", "memUsed", "memTotal", "diskUsed", "diskTotal"],
            "properties": {
                "timestamp": {"type": "string", "format": "date-time"},
                "timestampUnix": {"type": "integer"},
                "cpuCount": {"type": "integer"},
                "cpuUsedPct": {"type": "number"},
                "memUsed": {"type": "integer"},
                "memTotal": {"type": "integer"},
                "memCache": {"type": "integer"},
                "diskUsed": {"type": "integer"},
                "diskTotal": {"type": "integer"},
            },
        }},
        "E2bSnapshotInfo": {
            "type": "object",
            "required": ["snapshotID", "names"],
            "properties": {
                "snapshotID": {"type": "string", "pattern": "^snap-[a-z0-9]+$"},
                "names": {"type": "array", "items": {"type": "string"}, "description": "Its name (when given) and its id"},
            },
        },
        "E2bSnapshots": {"type": "array", "items": {"$ref": "#/components/schemas/E2bSnapshotInfo"}},
        "DashboardData": {
            "type": "object",
            "required": ["actor", "admin", "now", "sandboxes", "truncated", "accounts", "profiles", "hosts"],
            "properties": {
                "actor": {"$ref": "#/components/schemas/Actor"},
                "admin": {"type": "boolean", "description": "Whether the token is an `adm` token"},
                "now": {"type": "string", "format": "date-time", "description": "The server's clock (time left counts from here)"},
                "sandboxes": {"type": "array", "items": {"$ref": "#/components/schemas/Sandbox"}, "description": "Newest first"},
                "truncated": {"type": "boolean", "description": "More sandboxes match than the 500 listed"},
                "counts": {"type": ["object", "null"], "additionalProperties": {"type": "integer"}, "description": "Records per state (adm only)"},
                "accounts": {"type": "array", "items": {
                    "type": "object",
                    "required": ["actor", "granted", "available", "held", "spent"],
                    "properties": {
                        "actor": {"$ref": "#/components/schemas/Actor"},
                        "granted": {"$ref": "#/components/schemas/Amount"},
                        "available": {"$ref": "#/components/schemas/Amount"},
                        "held": {"$ref": "#/components/schemas/Amount"},
                        "spent": {"$ref": "#/components/schemas/Amount"},
                    },
                }},
                "profiles": {"type": "array", "items": string, "description": "Profile ids, for the filter"},
                "hosts": {"type": "array", "items": string, "description": "Host names, for the filter"},
                "events": {"type": ["object", "null"], "description": "The State Hub outbox (adm only)", "properties": {
                    "depth": {"type": "integer"},
                    "oldest_age_secs": {"type": ["integer", "null"]},
                    "backing_off_until": {"type": ["string", "null"], "format": "date-time"},
                    "last_error": {"type": ["object", "null"]},
                    "relay": {"type": "object", "description": "What this server's relay last did"},
                }},
            },
        },
        "Reachability": {
            "type": "object",
            "required": ["address"],
            "properties": {
                "address": string,
                "ports": {"type": "object", "additionalProperties": {"type": "array", "items": {"$ref": "#/components/schemas/Port"}}},
                "urls": string_map,
                "ssh": nullable_ref("SshTarget"),
                "details": {"type": "object"},
            },
        },
        "Port": {
            "type": "object",
            "required": ["target", "published", "protocol"],
            "properties": {"target": {"type": "integer"}, "published": {"type": "integer"}, "protocol": string},
        },
        "SshTarget": {
            "type": "object",
            "required": ["host", "port", "user"],
            "properties": {"host": string, "port": {"type": "integer"}, "user": string},
        },
        "Candidate": {
            "type": "object",
            "required": ["route", "extension", "host", "price_per_hour"],
            "properties": {"route": {"type": "integer"}, "extension": string, "host": string, "price_per_hour": {"$ref": "#/components/schemas/Amount"}},
        },
        "Skipped": {
            "type": "object",
            "required": ["route", "extension", "host", "reason"],
            "properties": {"route": {"type": "integer"}, "extension": string, "host": string, "reason": string},
        },
        "RouteTrace": {
            "type": "object",
            "required": ["policy", "chosen", "skipped"],
            "properties": {
                "policy": string,
                "chosen": nullable_ref("Candidate"),
                "skipped": {"type": "array", "items": {"$ref": "#/components/schemas/Skipped"}},
                "remaining": {"type": "array", "items": {"$ref": "#/components/schemas/Candidate"}},
            },
        },
        "Cost": {
            "type": "object",
            "required": ["price_per_hour", "held", "settled"],
            "properties": {
                "price_per_hour": {"$ref": "#/components/schemas/Amount"},
                "held": {"$ref": "#/components/schemas/Amount"},
                "settled": nullable_ref("Amount"),
            },
        },
        "Decision": {
            "type": "object",
            "required": ["policy", "candidates", "rejected"],
            "properties": {
                "policy": string,
                "candidates": {"type": "array", "items": {"$ref": "#/components/schemas/Candidate"}, "description": "In the order they would be tried; the first is chosen"},
                "rejected": {"type": "array", "items": {"$ref": "#/components/schemas/Skipped"}},
            },
        },
        "ProfileRow": {
            "type": "object",
            "required": ["id", "version", "extensions", "available", "missing_extensions", "source", "description"],
            "properties": {
                "id": string,
                "version": {"type": "integer"},
                "extensions": {"type": "array", "items": string},
                "available": {"type": "boolean", "description": "At least one of its extensions is in this build"},
                "missing_extensions": {"type": "array", "items": string},
                "source": string,
                "description": string,
            },
        },
        "ProfileList": {"type": "array", "items": {"$ref": "#/components/schemas/ProfileRow"}},
        "Profile": {
            "type": "object",
            "required": ["id", "version", "description", "inputs", "default_ttl", "max_ttl", "ready_timeout", "policy", "routes", "source"],
            "properties": {
                "id": string,
                "version": {"type": "integer"},
                "description": string,
                "inputs": {"type": "object", "additionalProperties": {
                    "type": "object",
                    "required": ["required", "help", "default"],
                    "properties": {"required": {"type": "boolean"}, "help": string, "default": opt_string},
                }},
                "default_ttl": {"$ref": "#/components/schemas/Duration"},
                "max_ttl": {"$ref": "#/components/schemas/Duration"},
                "ready_timeout": {"$ref": "#/components/schemas/Duration"},
                "policy": {"type": "string", "enum": ["ordered", "burst", "cheapest"]},
                "routes": {"type": "array", "items": {
                    "type": "object",
                    "required": ["extension", "config", "placement", "price_per_hour"],
                    "properties": {
                        "extension": string,
                        "config": {"type": "object"},
                        "placement": {"type": "array", "items": string},
                        "price_per_hour": {"$ref": "#/components/schemas/Amount"},
                    },
                }},
                "source": {"type": "object", "required": ["kind"], "properties": {"kind": {"type": "string", "enum": ["builtin", "file"]}, "path": string, "overrides": {"type": "boolean"}}},
            },
        },
        "HostRow": {
            "type": "object",
            "required": ["name", "kind", "address", "port", "user", "identity_file", "capacity", "live", "labels", "default", "reachable", "error"],
            "properties": {
                "name": string,
                "kind": {"type": "string", "enum": ["local", "ssh"]},
                "address": string,
                "port": nullable(json!({"type": "integer"})),
                "user": opt_string,
                "identity_file": {"anyOf": [{"type": "string"}, {"type": "null"}], "description": "Only for `adm` tokens (null otherwise)"},
                "capacity": nullable(json!({"type": "integer"})),
                "live": {"type": "integer"},
                "labels": string_map,
                "default": {"type": "boolean"},
                "reachable": {"type": "boolean"},
                "error": opt_string,
            },
        },
        "HostList": {"type": "array", "items": {"$ref": "#/components/schemas/HostRow"}},
        "HostInventory": {
            "type": "object",
            "description": "Every measurement is null when the host did not report it; see docs/host-telemetry.md.",
            "required": ["host", "collected_at", "docker"],
            "properties": {
                "host": string,
                "collected_at": time(),
                "cpus": nullable(json!({"type": "integer"})),
                "load_1": nullable(json!({"type": "number"})),
                "load_5": nullable(json!({"type": "number"})),
                "load_15": nullable(json!({"type": "number"})),
                "mem_total_bytes": nullable(json!({"type": "integer"})),
                "mem_available_bytes": nullable(json!({"type": "integer"})),
                "disk_free_bytes": nullable(json!({"type": "integer"})),
                "disk_path": opt_string,
                "kernel": opt_string,
                "docker": {"type": "object", "required": ["present", "version"], "properties": {"present": {"type": "boolean"}, "version": opt_string}},
                "venues_running": nullable(json!({"type": "integer"})),
            },
        },
        "StaleItem": {
            "type": "object",
            "required": ["kind", "sandbox_id", "host", "extension", "state", "detail", "resource"],
            "properties": {
                "kind": {"type": "string", "enum": ["expired", "stuck", "orphan", "ghost"]},
                "sandbox_id": string,
                "host": string,
                "extension": string,
                "state": nullable_ref("State"),
                "detail": string,
                "resource": nullable(json!({"type": "object", "properties": {"sandbox_id": string, "kind": string, "name": string, "running": {"type": "boolean"}}})),
            },
        },
        "Unchecked": {
            "type": "object",
            "required": ["host", "extension", "reason"],
            "properties": {"host": string, "extension": string, "reason": string},
        },
        "StaleReport": {
            "type": "object",
            "required": ["checked_at", "grace_seconds", "items", "unchecked"],
            "properties": {
                "checked_at": opt_time,
                "grace_seconds": {"type": "integer"},
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/StaleItem"}},
                "unchecked": {"type": "array", "items": {"$ref": "#/components/schemas/Unchecked"}},
                "uploads": {"type": "array", "items": {"$ref": "#/components/schemas/SweptUpload"}, "description": "Uploads nothing needs any more (absent when none)"},
            },
        },
        "SweptUpload": {
            "type": "object",
            "required": ["id", "actor", "detail"],
            "properties": {
                "id": {"type": "string"},
                "actor": nullable_ref("Actor"),
                "detail": {"type": "string"},
            },
        },
        "ReapReport": {
            "type": "object",
            "required": ["dry_run", "reaped", "unchecked", "ok"],
            "properties": {
                "dry_run": {"type": "boolean"},
                "reaped": {"type": "array", "items": {"allOf": [{"$ref": "#/components/schemas/StaleItem"}], "properties": {
                    "outcome": {"type": "string", "description": "`destroyed`, `torn down`, `would reap` (dry run) or `failed: ...`"},
                    "ok": {"type": "boolean"},
                }}},
                "unchecked": {"type": "array", "items": {"$ref": "#/components/schemas/Unchecked"}},
                "uploads": {"type": "array", "items": {"$ref": "#/components/schemas/SweptUpload"}, "description": "Uploads removed, or that would be (absent when none)"},
                "ok": {"type": "boolean", "description": "Every item was reaped"},
            },
        },
        "Account": {
            "type": "object",
            "required": ["granted", "available", "held", "spent"],
            "properties": {
                "granted": {"$ref": "#/components/schemas/Amount"},
                "available": {"$ref": "#/components/schemas/Amount"},
                "held": {"$ref": "#/components/schemas/Amount"},
                "spent": {"$ref": "#/components/schemas/Amount"},
            },
        },
        "Balance": {
            "type": "object",
            "required": ["actor", "account"],
            "properties": {"actor": {"$ref": "#/components/schemas/Actor"}, "account": {"$ref": "#/components/schemas/Account"}},
        },
        "LedgerEntry": {
            "type": "object",
            "description": "One ledger entry; the fields besides id, at and kind depend on the kind (see sandboxer-credits).",
            "required": ["id", "at", "kind"],
            "properties": {
                "id": string,
                "at": time(),
                "kind": {"type": "string", "enum": ["grant", "hold", "extend", "settle", "void"]},
                "actor": {"$ref": "#/components/schemas/Actor"},
                "by": {"$ref": "#/components/schemas/Actor"},
                "sandbox_id": string,
                "amount": {"$ref": "#/components/schemas/Amount"},
            },
        },
        "LedgerEntries": {"type": "array", "items": {"$ref": "#/components/schemas/LedgerEntry"}},
        "GrantResult": {
            "type": "object",
            "required": ["entry", "duplicate", "actor", "account"],
            "properties": {
                "entry": {"$ref": "#/components/schemas/LedgerEntry"},
                "duplicate": {"type": "boolean", "description": "The key was applied before; nothing changed"},
                "actor": {"$ref": "#/components/schemas/Actor"},
                "account": {"$ref": "#/components/schemas/Account"},
            },
        },
        "UsageRow": {
            "type": "object",
            "required": ["sandbox_id", "extension", "host", "profile", "price_per_hour", "held", "seconds", "cost", "state", "opened_at"],
            "properties": {
                "sandbox_id": string,
                "extension": string,
                "host": string,
                "profile": string,
                "price_per_hour": {"$ref": "#/components/schemas/Amount"},
                "held": {"$ref": "#/components/schemas/Amount"},
                "seconds": nullable(json!({"type": "integer"})),
                "cost": nullable_ref("Amount"),
                "state": {"type": "string", "enum": ["open", "settled", "voided"]},
                "opened_at": time(),
            },
        },
        "Usage": {
            "type": "object",
            "required": ["actor", "usage"],
            "properties": {"actor": {"$ref": "#/components/schemas/Actor"}, "usage": {"type": "array", "items": {"$ref": "#/components/schemas/UsageRow"}}},
        },
        "RepoArchive": {
            "type": "string",
            "format": "binary",
            "description": "A tar archive of the repo folder, optionally gzip-compressed",
        },
        "Upload": {
            "type": "object",
            "required": ["id", "actor", "created_at", "files", "bytes", "used_by", "use_as"],
            "properties": {
                "id": {"type": "string", "pattern": "^upl-[a-z0-9]+$"},
                "actor": {"$ref": "#/components/schemas/Actor"},
                "created_at": time(),
                "files": {"type": "integer", "minimum": 0},
                "bytes": {"type": "integer", "minimum": 0},
                "used_by": {"type": "array", "items": {"type": "string"}},
                "use_as": {"type": "string", "description": "The `repo` input value that names this upload in a create", "example": "upload:upl-q3v7k2m4xa"},
            },
        },
        "UploadList": {"type": "array", "items": {"$ref": "#/components/schemas/Upload"}},
        "CheckReport": {
            "type": "object",
            "required": ["entries", "actors", "open_holds", "violations", "ok"],
            "properties": {
                "entries": {"type": "integer"},
                "actors": {"type": "integer"},
                "open_holds": {"type": "integer"},
                "violations": {"type": "array", "items": {"type": "object"}},
                "ok": {"type": "boolean"},
            },
        },
    })
}

/// The whole document (built once).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

fn build() -> Value {
    let mut paths = Map::new();
    for op in OPERATIONS {
        let item = paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        item[op.method.as_str()] = operation_json(op);
    }
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
            "responses": error_responses(),
            "schemas": schemas(),
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
