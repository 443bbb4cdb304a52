//! The async client of a beacon node — or of several, failing over per request class
//! ([`super::fallback`]).
//!
//! Every error names the method and endpoint (path and query) and, for HTTP errors, the status
//! and the start of the body. Requests have a timeout; the SSE event stream has only a connect
//! timeout. See the [`eth` module docs](crate::eth) for the Lodestar quirks this client works
//! around.

use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::stream::{BoxStream, StreamExt};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::api::{
    normalize_committees, normalize_proposer_duties, AttesterDuty, BlockHeaderData, BlockId,
    Committee, Data, Duties, NodeVersion, ProposerDuty, StateId, SyncDuty, SyncingStatus,
    ValidatorData, ValidatorId, Versioned,
};
use super::events::{BeaconEvent, EventTopic};
use super::fallback::{Endpoints, RequestClass};
use crate::eth::aggregate::SyncCommitteeContribution;
use crate::eth::config::{Genesis, SpecConfig};
use crate::eth::signing::{ForkName, ForkSchedule};
use crate::eth::types::{
    from_json_slice, from_json_value, Attestation, AttestationData, BeaconBlockAltair,
    BlsSignature, CommitteeIndex, Epoch, Fork, Graffiti, Preset, Root, SignedBeaconBlockAltair,
    SignedVoluntaryExit, Slot, SyncCommitteeMessage, ValidatorIndex,
};

/// Validator ids per `state_validators` request: 64 pubkeys make a URI of about 6.6 KB, well
/// under the 16 KiB header limit of a Node.js beacon node (Lodestar answers 431 above it, which
/// a single request for every validator of a cluster of ~160 or more exceeds).
pub const VALIDATOR_IDS_PER_REQUEST: usize = 64;

/// Default timeout of one request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default timeout to establish a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How many bytes of an error body an error message keeps.
const BODY_SNIPPET_LEN: usize = 512;
/// Largest response body read from a beacon node: an epoch's committees on mainnet are
/// ~20 MiB of JSON, a block at most 10 MiB. A larger answer is refused, not buffered.
pub const MAX_RESPONSE_BODY: usize = 64 << 20;
/// Largest event of an event stream (head, block and attestation events are hundreds of
/// bytes): a stream that goes on longer without ending an event is cut with an error.
pub const MAX_EVENT: usize = 1 << 20;

/// A failed beacon-node call.
#[derive(Debug, thiserror::Error)]
pub enum BeaconError {
    /// The base URL or a derived URL is invalid.
    #[error("invalid beacon node URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The request could not be sent or its response not read.
    #[error("{method} {endpoint}: request failed: {source}")]
    Transport {
        /// HTTP method.
        method: Method,
        /// Path and query.
        endpoint: String,
        /// Underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// No response within the timeout.
    #[error("{method} {endpoint}: timed out")]
    Timeout {
        /// HTTP method.
        method: Method,
        /// Path and query.
        endpoint: String,
    },
    /// The beacon node answered with a non-success status.
    #[error("{method} {endpoint}: HTTP {status}: {body}")]
    Status {
        /// HTTP method.
        method: Method,
        /// Path and query.
        endpoint: String,
        /// HTTP status.
        status: StatusCode,
        /// Start of the response body.
        body: String,
        /// What the answer says about the items of an array submission, when it says
        /// anything ([`parse_item_errors`], read from the whole body).
        items: Option<Box<ItemErrors>>,
    },
    /// The response body is not what the API specifies.
    #[error("{method} {endpoint}: invalid response at `{path}`: {message} (body starts: {body})")]
    Decode {
        /// HTTP method.
        method: Method,
        /// Path and query.
        endpoint: String,
        /// JSON path of the offending field.
        path: String,
        /// What is wrong.
        message: String,
        /// Start of the response body.
        body: String,
    },
    /// The response is well-formed but not usable (wrong fork, inconsistent data).
    #[error("{method} {endpoint}: {message}")]
    Unexpected {
        /// HTTP method.
        method: Method,
        /// Path and query.
        endpoint: String,
        /// What is wrong.
        message: String,
    },
    /// The SSE event stream failed or sent an event that does not decode.
    #[error("event stream {endpoint}: {message}")]
    EventStream {
        /// Path and query.
        endpoint: String,
        /// What is wrong.
        message: String,
    },
}

impl BeaconError {
    /// The HTTP status, when the beacon node answered with an error status.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            BeaconError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the beacon node answered 404 (unknown block, state, ...).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
    }

    /// What an error answer says about the items of an array submission, if anything.
    pub fn item_errors(&self) -> Option<&ItemErrors> {
        match self {
            BeaconError::Status { items, .. } => items.as_deref(),
            _ => None,
        }
    }
}

/// What a beacon node's error answer to an array submission (`POST …/pool/attestations`,
/// `…/pool/sync_committees`, `…/aggregate_and_proofs`, `…/contribution_and_proofs`) says about
/// its items.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemErrors {
    /// The beacon API's answer: `{"code":400,"message":…,"failures":[{"index":i,"message":…}]}`,
    /// the failed items by position in the request (every other item was accepted).
    Indexed(Vec<(usize, String)>),
    /// Messages without positions. Lodestar 1.5.1 validates the items of an array concurrently
    /// and answers HTTP 500 with `{"statusCode":500,"error":…,"message":…}` whose message is
    /// one failed item's error (`ATTESTATION_ERROR_…`) when exactly one failed, or
    /// `Multiple errors on <operation>\n<error>\n<error>…` (one line per failed item, in the
    /// order they failed, not in request order; the sync-committee endpoint says
    /// `publishAggregateAndProofs` there) when several did. Also any other error answer's
    /// `message`.
    Unindexed(Vec<String>),
}

/// Reads the item failures of an error answer's body (see [`ItemErrors`]); `None` when the
/// body is not a JSON object with `failures` or a `message`.
pub fn parse_item_errors(body: &[u8]) -> Option<ItemErrors> {
    #[derive(Deserialize)]
    struct Failure {
        index: serde_json::Value,
        #[serde(default)]
        message: String,
    }
    #[derive(Deserialize)]
    struct ErrorBody {
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        failures: Option<Vec<Failure>>,
    }
    let b: ErrorBody = serde_json::from_slice(body).ok()?;
    if let Some(failures) = b.failures.filter(|f| !f.is_empty()) {
        let index = |v: &serde_json::Value| match v {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        };
        let indexed: Option<Vec<(usize, String)>> = failures
            .iter()
            .map(|f| Some((usize::try_from(index(&f.index)?).ok()?, f.message.clone())))
            .collect();
        return Some(match indexed {
            Some(v) => ItemErrors::Indexed(v),
            // A position that is not a number: the messages are all that can be used.
            None => ItemErrors::Unindexed(failures.into_iter().map(|f| f.message).collect()),
        });
    }
    let message = b.message?;
    if let Some(rest) = message.strip_prefix("Multiple errors on ") {
        let lines = rest
            .split_once('\n')
            .map(|(_, l)| l)
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>();
        if !lines.is_empty() {
            return Some(ItemErrors::Unindexed(lines));
        }
    }
    Some(ItemErrors::Unindexed(vec![message]))
}

type Result<T, E = BeaconError> = std::result::Result<T, E>;

/// Whether a beacon node error says it has the object already (Lodestar 1.5.1 answers 500 with
/// `ATTESTATION_ERROR_ATTESTATION_ALREADY_KNOWN`, `…PRIOR_SYNC_COMMITTEE_MESSAGE_KNOWN`,
/// `…AGGREGATOR_ALREADY_KNOWN`, `VOLUNTARY_EXIT_ERROR_ALREADY_EXISTS` or
/// `PublishError.Duplicate` when another node of the cluster submitted first). Such an answer
/// is the request's outcome, not a failure of the node: no failover.
pub fn already_known(error: &str) -> bool {
    [
        "ALREADY_KNOWN",
        "MESSAGE_KNOWN",
        "ALREADY_EXISTS",
        "PublishError.Duplicate",
    ]
    .iter()
    .any(|m| error.contains(m))
}

/// An async client of a beacon node's REST API, or of several ([`Endpoints`]): each request
/// goes to the healthy ones in order and fails over on transport errors, timeouts and 5xx.
#[derive(Clone, Debug)]
pub struct BeaconClient {
    http: reqwest::Client,
    endpoints: Endpoints,
    request_timeout: Duration,
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut end = text.len().min(BODY_SNIPPET_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut s = text[..end].trim().to_string();
    if end < text.len() {
        s.push('…');
    }
    s
}

fn endpoint_of(url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

impl BeaconClient {
    /// A client for the beacon node at `base_url` (e.g. `http://127.0.0.1:5052`), or for a
    /// comma-separated list of them (primary first, then fallbacks), with the default timeouts.
    pub fn new(base_url: &str) -> Result<Self> {
        Self::with_timeouts(base_url, DEFAULT_REQUEST_TIMEOUT, DEFAULT_CONNECT_TIMEOUT)
    }

    /// A client with explicit per-request and connect timeouts.
    pub fn with_timeouts(
        base_url: &str,
        request_timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self> {
        let endpoints = Endpoints::parse(base_url).map_err(|reason| BeaconError::InvalidUrl {
            url: base_url.to_string(),
            reason,
        })?;
        Self::with_endpoints(endpoints, request_timeout, connect_timeout)
    }

    /// A client of `endpoints` (shared with whoever else uses them, e.g. the validator API's
    /// proxy, so that both see one health record).
    pub fn with_endpoints(
        endpoints: Endpoints,
        request_timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .build()
            .map_err(|e| BeaconError::InvalidUrl {
                url: endpoints.describe(),
                reason: format!("cannot build HTTP client: {e}"),
            })?;
        Ok(Self {
            http,
            endpoints,
            request_timeout,
        })
    }

    /// The primary beacon node's base URL.
    pub fn base_url(&self) -> &Url {
        self.endpoints.url(0)
    }

    /// The beacon nodes and their health.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// `path` and `query` on the primary beacon node ([`BeaconClient::on_endpoint`] moves it to
    /// another).
    fn url(&self, path: &str, query: &[(&str, String)]) -> Result<Url> {
        let base = self.endpoints.url(0);
        let mut url =
            base.join(path.trim_start_matches('/'))
                .map_err(|e| BeaconError::InvalidUrl {
                    url: format!("{base}{path}"),
                    reason: e.to_string(),
                })?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// `url` (built on the primary by [`BeaconClient::url`]) on endpoint `i`.
    fn on_endpoint(&self, url: &Url, i: usize) -> Url {
        if i == 0 {
            return url.clone();
        }
        let primary = self.endpoints.url(0).as_str();
        let rest = url.as_str().strip_prefix(primary).unwrap_or_default();
        Url::parse(&format!("{}{rest}", self.endpoints.url(i))).unwrap_or_else(|_| url.clone())
    }

    /// Whether `e` is a failure of the beacon node (try another) rather than of the request.
    fn node_failed(e: &BeaconError) -> bool {
        match e {
            BeaconError::Transport { .. } | BeaconError::Timeout { .. } => true,
            BeaconError::Status { status, body, .. } => {
                status.is_server_error() && !already_known(body)
            }
            _ => false,
        }
    }

    fn transport_error(method: &Method, endpoint: &str, e: reqwest::Error) -> BeaconError {
        if e.is_timeout() {
            BeaconError::Timeout {
                method: method.clone(),
                endpoint: endpoint.to_string(),
            }
        } else {
            BeaconError::Transport {
                method: method.clone(),
                endpoint: endpoint.to_string(),
                source: e,
            }
        }
    }

    /// Sends a request to the beacon nodes in order until one answers it, and returns the
    /// body of that 2xx response (or the last failure).
    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<(String, Vec<u8>)> {
        let endpoint = endpoint_of(&url);
        let class = RequestClass::of(&method, url.path());
        let order = self.endpoints.order(class);
        let mut last = None;
        for (n, &i) in order.iter().enumerate() {
            let attempt =
                self.call_one(&method, self.on_endpoint(&url, i), &endpoint, body.clone());
            let result = match self.endpoints.attempt_timeout(i, class, n) {
                None => attempt.await,
                Some(t) => tokio::time::timeout(t, attempt).await.unwrap_or_else(|_| {
                    Err(BeaconError::Timeout {
                        method: method.clone(),
                        endpoint: endpoint.clone(),
                    })
                }),
            };
            match result {
                Ok(bytes) => {
                    self.endpoints.succeeded(i, class, n == 0);
                    return Ok((endpoint, bytes));
                }
                Err(e) if Self::node_failed(&e) => {
                    self.endpoints.failed(i, class);
                    // Keep the first answer a node gave (e.g. a 503 saying why) over a later
                    // node's transport failure.
                    if !matches!(last, Some(BeaconError::Status { .. })) {
                        last = Some(e);
                    }
                }
                Err(e) => {
                    // The request's own fault: the same anywhere.
                    self.endpoints.succeeded(i, class, n == 0);
                    return Err(e);
                }
            }
        }
        Err(last.expect("at least one endpoint"))
    }

    /// One attempt at one beacon node.
    async fn call_one(
        &self,
        method: &Method,
        url: Url,
        endpoint: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let mut req = self
            .http
            .request(method.clone(), url)
            .timeout(self.request_timeout)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Self::transport_error(method, endpoint, e))?;
        let status = resp.status();
        let bytes = match read_limited(resp, MAX_RESPONSE_BODY).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                return Err(BeaconError::Unexpected {
                    method: method.clone(),
                    endpoint: endpoint.to_string(),
                    message: format!(
                        "HTTP {status}: response body larger than {MAX_RESPONSE_BODY} bytes"
                    ),
                })
            }
            Err(e) => return Err(Self::transport_error(method, endpoint, e)),
        };
        if !status.is_success() {
            return Err(BeaconError::Status {
                method: method.clone(),
                endpoint: endpoint.to_string(),
                status,
                body: snippet(&bytes),
                items: parse_item_errors(&bytes).map(Box::new),
            });
        }
        Ok(bytes)
    }

    fn decode<T: DeserializeOwned>(method: Method, endpoint: &str, body: &[u8]) -> Result<T> {
        from_json_slice(body).map_err(|e| BeaconError::Decode {
            method,
            endpoint: endpoint.to_string(),
            path: e.path,
            message: e.message,
            body: snippet(body),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T> {
        let url = self.url(path, query)?;
        let (endpoint, body) = self.call(Method::GET, url, None).await?;
        Self::decode(Method::GET, &endpoint, &body)
    }

    /// `GET` of an answer wrapped in `{"data": …}`: the data.
    async fn get_data<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T> {
        Ok(self.get::<Data<T>>(path, query).await?.data)
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let url = self.url(path, &[])?;
        let (endpoint, resp) = self.post_raw(url, body).await?;
        Self::decode(Method::POST, &endpoint, &resp)
    }

    async fn post_raw<B: Serialize + ?Sized>(
        &self,
        url: Url,
        body: &B,
    ) -> Result<(String, Vec<u8>)> {
        let json = serde_json::to_vec(body).map_err(|e| BeaconError::Unexpected {
            method: Method::POST,
            endpoint: endpoint_of(&url),
            message: format!("cannot encode request body: {e}"),
        })?;
        self.call(Method::POST, url, Some(json)).await
    }

    async fn post_no_content<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> Result<()> {
        let url = self.url(path, &[])?;
        self.post_raw(url, body).await.map(|_| ())
    }

    /// The beacon node's clock: the `Date` header (Unix seconds) of its answer to
    /// `GET /eth/v1/node/version` (any answer will do; this one is cheap). See
    /// [`crate::clock::follow`].
    pub async fn server_date(&self) -> Result<i64> {
        let url = self.url("/eth/v1/node/version", &[])?;
        let endpoint = endpoint_of(&url);
        // The clock of the node the others are fetched from: the first in order.
        let i = self.endpoints.order(RequestClass::Data)[0];
        let resp = self
            .http
            .get(self.on_endpoint(&url, i))
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(|e| Self::transport_error(&Method::GET, &endpoint, e))?;
        let unexpected = |message: String| BeaconError::Unexpected {
            method: Method::GET,
            endpoint: endpoint.clone(),
            message,
        };
        let date = resp
            .headers()
            .get(reqwest::header::DATE)
            .ok_or_else(|| unexpected("the answer has no Date header".into()))?
            .to_str()
            .map_err(|e| unexpected(format!("unreadable Date header: {e}")))?;
        let t = httpdate::parse_http_date(date)
            .map_err(|e| unexpected(format!("invalid Date header {date:?}: {e}")))?;
        let secs = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| unexpected(format!("Date header {date:?} is before 1970")))?
            .as_secs();
        Ok(i64::try_from(secs).unwrap_or(i64::MAX))
    }

    /// `GET /eth/v1/beacon/genesis`.
    pub async fn genesis(&self) -> Result<Genesis> {
        self.get_data("/eth/v1/beacon/genesis", &[]).await
    }

    /// `GET /eth/v1/config/spec`.
    pub async fn spec(&self) -> Result<SpecConfig> {
        self.get_data("/eth/v1/config/spec", &[]).await
    }

    /// The chain's [`ForkSchedule`], from `config/spec` and `beacon/genesis`.
    pub async fn fork_schedule(&self) -> Result<ForkSchedule> {
        let spec = self.spec().await?;
        let genesis = self.genesis().await?;
        ForkSchedule::from_spec(&spec, &genesis).map_err(|e| BeaconError::Unexpected {
            method: Method::GET,
            endpoint: "/eth/v1/config/spec".to_string(),
            message: e.to_string(),
        })
    }

    /// `GET /eth/v1/beacon/states/{state_id}/fork`.
    pub async fn fork(&self, state: StateId) -> Result<Fork> {
        self.get_data(&format!("/eth/v1/beacon/states/{state}/fork"), &[])
            .await
    }

    /// `GET /eth/v1/node/syncing`.
    pub async fn node_syncing(&self) -> Result<SyncingStatus> {
        self.get_data("/eth/v1/node/syncing", &[]).await
    }

    /// `GET /eth/v1/node/version`: the version string.
    pub async fn node_version(&self) -> Result<String> {
        Ok(self
            .get_data::<NodeVersion>("/eth/v1/node/version", &[])
            .await?
            .version)
    }

    /// `POST /eth/v1/validator/duties/attester/{epoch}` for `indices`.
    pub async fn attester_duties(
        &self,
        epoch: Epoch,
        indices: &[ValidatorIndex],
    ) -> Result<Duties<AttesterDuty>> {
        let body: Vec<String> = indices.iter().map(u64::to_string).collect();
        self.post(&format!("/eth/v1/validator/duties/attester/{epoch}"), &body)
            .await
    }

    /// `GET /eth/v1/validator/duties/proposer/{epoch}` (all proposers of the epoch), with slots
    /// inside `epoch` whatever the node answers (see [`normalize_proposer_duties`]).
    pub async fn proposer_duties<P: Preset>(&self, epoch: Epoch) -> Result<Duties<ProposerDuty>> {
        let url = self.url(&format!("/eth/v1/validator/duties/proposer/{epoch}"), &[])?;
        let (endpoint, body) = self.call(Method::GET, url, None).await?;
        let mut duties: Duties<ProposerDuty> = Self::decode(Method::GET, &endpoint, &body)?;
        duties.data = normalize_proposer_duties(duties.data, epoch, P::SLOTS_PER_EPOCH).map_err(
            |message| BeaconError::Unexpected {
                method: Method::GET,
                endpoint,
                message,
            },
        )?;
        Ok(duties)
    }

    /// `POST /eth/v1/validator/duties/sync/{epoch}` for `indices`.
    pub async fn sync_duties(
        &self,
        epoch: Epoch,
        indices: &[ValidatorIndex],
    ) -> Result<Duties<SyncDuty>> {
        let body: Vec<String> = indices.iter().map(u64::to_string).collect();
        self.post(&format!("/eth/v1/validator/duties/sync/{epoch}"), &body)
            .await
    }

    /// `GET /eth/v1/validator/attestation_data?slot&committee_index`.
    pub async fn attestation_data(
        &self,
        slot: Slot,
        committee_index: CommitteeIndex,
    ) -> Result<AttestationData> {
        let query = [
            ("slot", slot.to_string()),
            ("committee_index", committee_index.to_string()),
        ];
        self.get_data("/eth/v1/validator/attestation_data", &query)
            .await
    }

    /// `GET /eth/v2/validator/blocks/{slot}`: an unsigned block of any fork, as JSON.
    pub async fn produce_block_raw(
        &self,
        slot: Slot,
        randao_reveal: &BlsSignature,
        graffiti: Option<&Graffiti>,
    ) -> Result<Versioned<serde_json::Value>> {
        let mut query = vec![("randao_reveal", randao_reveal.to_string())];
        if let Some(g) = graffiti {
            query.push(("graffiti", g.to_string()));
        }
        self.get(&format!("/eth/v2/validator/blocks/{slot}"), &query)
            .await
    }

    /// `GET /eth/v2/validator/blocks/{slot}`, requiring an Altair block.
    pub async fn produce_block<P: Preset>(
        &self,
        slot: Slot,
        randao_reveal: &BlsSignature,
        graffiti: Option<&Graffiti>,
    ) -> Result<BeaconBlockAltair<P>> {
        let endpoint = format!("/eth/v2/validator/blocks/{slot}");
        let raw = self
            .produce_block_raw(slot, randao_reveal, graffiti)
            .await?;
        Self::altair_data(raw, &endpoint)
    }

    fn altair_data<T: DeserializeOwned>(
        raw: Versioned<serde_json::Value>,
        endpoint: &str,
    ) -> Result<T> {
        if raw.fork_name() != Some(ForkName::Altair) {
            return Err(BeaconError::Unexpected {
                method: Method::GET,
                endpoint: endpoint.to_string(),
                message: format!("expected an altair block, got version {:?}", raw.version),
            });
        }
        from_json_value(raw.data).map_err(|e| BeaconError::Decode {
            method: Method::GET,
            endpoint: endpoint.to_string(),
            path: if e.path == "." {
                "data".to_string()
            } else {
                format!("data.{}", e.path)
            },
            message: e.message,
            body: String::new(),
        })
    }

    /// `POST path` with a JSON array of `items` (a pool or aggregate submission, e.g.
    /// `/eth/v1/beacon/pool/attestations`): what the beacon node says of the items of a refused
    /// array is in the error's [`BeaconError::item_errors`].
    pub async fn submit_array<T: Serialize>(&self, path: &str, items: &[&T]) -> Result<()> {
        self.post_no_content(path, items).await
    }

    /// `POST /eth/v1/beacon/pool/attestations`.
    pub async fn submit_attestations<P: Preset>(
        &self,
        attestations: &[Attestation<P>],
    ) -> Result<()> {
        self.post_no_content("/eth/v1/beacon/pool/attestations", attestations)
            .await
    }

    /// `POST /eth/v1/beacon/blocks` with an Altair block.
    pub async fn submit_block<P: Preset>(&self, block: &SignedBeaconBlockAltair<P>) -> Result<()> {
        self.post_no_content("/eth/v1/beacon/blocks", block).await
    }

    /// `POST /eth/v1/beacon/blocks` with a signed block of any fork, as JSON.
    pub async fn submit_block_raw(&self, block: &serde_json::Value) -> Result<()> {
        self.post_no_content("/eth/v1/beacon/blocks", block).await
    }

    /// `POST /eth/v1/beacon/pool/sync_committees`.
    pub async fn submit_sync_committee_messages(
        &self,
        messages: &[SyncCommitteeMessage],
    ) -> Result<()> {
        self.post_no_content("/eth/v1/beacon/pool/sync_committees", messages)
            .await
    }

    /// `GET /eth/v1/validator/aggregate_attestation`: the best aggregate the beacon node has of
    /// the attestations with data root `attestation_data_root` at `slot`.
    pub async fn aggregate_attestation<P: Preset>(
        &self,
        slot: Slot,
        attestation_data_root: Root,
    ) -> Result<Attestation<P>> {
        let query = [
            ("attestation_data_root", attestation_data_root.to_string()),
            ("slot", slot.to_string()),
        ];
        Ok(self
            .get::<Data<Attestation<P>>>("/eth/v1/validator/aggregate_attestation", &query)
            .await?
            .data)
    }

    /// `GET /eth/v1/validator/sync_committee_contribution`: the beacon node's aggregate of the
    /// sync committee messages of `subcommittee_index` over `beacon_block_root` at `slot`.
    pub async fn sync_committee_contribution<P: Preset>(
        &self,
        slot: Slot,
        subcommittee_index: u64,
        beacon_block_root: Root,
    ) -> Result<SyncCommitteeContribution<P>> {
        let query = [
            ("slot", slot.to_string()),
            ("subcommittee_index", subcommittee_index.to_string()),
            ("beacon_block_root", beacon_block_root.to_string()),
        ];
        Ok(self
            .get::<Data<SyncCommitteeContribution<P>>>(
                "/eth/v1/validator/sync_committee_contribution",
                &query,
            )
            .await?
            .data)
    }

    /// `POST /eth/v1/beacon/pool/voluntary_exits`.
    pub async fn submit_voluntary_exit(&self, exit: &SignedVoluntaryExit) -> Result<()> {
        self.post_no_content("/eth/v1/beacon/pool/voluntary_exits", exit)
            .await
    }

    /// `GET /eth/v2/beacon/blocks/{block_id}`: a signed block of any fork, as JSON.
    pub async fn block_raw(&self, id: BlockId) -> Result<Versioned<serde_json::Value>> {
        self.get(&format!("/eth/v2/beacon/blocks/{id}"), &[]).await
    }

    /// `GET /eth/v2/beacon/blocks/{block_id}`, requiring an Altair block.
    pub async fn block<P: Preset>(&self, id: BlockId) -> Result<SignedBeaconBlockAltair<P>> {
        let raw = self.block_raw(id).await?;
        Self::altair_data(raw, &format!("/eth/v2/beacon/blocks/{id}"))
    }

    /// `GET /eth/v1/beacon/headers/{block_id}`.
    pub async fn header(&self, id: BlockId) -> Result<BlockHeaderData> {
        self.get_data(&format!("/eth/v1/beacon/headers/{id}"), &[])
            .await
    }

    /// `GET /eth/v1/beacon/states/{state_id}/validators?id=..` (one `id=` per validator, which
    /// Lodestar v1.5.1 needs; an empty `ids` lists all validators). Many ids are asked for
    /// [`VALIDATOR_IDS_PER_REQUEST`] at a time, one request after the other.
    pub async fn state_validators(
        &self,
        state: StateId,
        ids: &[ValidatorId],
    ) -> Result<Vec<ValidatorData>> {
        let path = format!("/eth/v1/beacon/states/{state}/validators");
        if ids.is_empty() {
            return self.get_data(&path, &[]).await;
        }
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(VALIDATOR_IDS_PER_REQUEST) {
            let query: Vec<(&str, String)> =
                chunk.iter().map(|id| ("id", id.to_string())).collect();
            out.extend(self.get_data::<Vec<ValidatorData>>(&path, &query).await?);
        }
        Ok(out)
    }

    /// `GET /eth/v1/beacon/states/{state_id}/sync_committees?epoch=..`: the validator index at
    /// each position of the sync committee of `epoch`'s period.
    pub async fn sync_committee(
        &self,
        state: StateId,
        epoch: Epoch,
    ) -> Result<Vec<ValidatorIndex>> {
        #[derive(Deserialize)]
        struct SyncCommittee {
            #[serde(with = "serde_utils::quoted_u64_vec")]
            validators: Vec<ValidatorIndex>,
        }
        Ok(self
            .get_data::<SyncCommittee>(
                &format!("/eth/v1/beacon/states/{state}/sync_committees"),
                &[("epoch", epoch.to_string())],
            )
            .await?
            .validators)
    }

    /// `GET /eth/v1/beacon/states/{state_id}/committees?epoch=..`: all committees of `epoch`,
    /// in spec shape whatever the node answers (see [`normalize_committees`]).
    pub async fn committees<P: Preset>(
        &self,
        state: StateId,
        epoch: Epoch,
    ) -> Result<Vec<Committee>> {
        let url = self.url(
            &format!("/eth/v1/beacon/states/{state}/committees"),
            &[("epoch", epoch.to_string())],
        )?;
        let (endpoint, body) = self.call(Method::GET, url, None).await?;
        let data: Data<Vec<Committee>> = Self::decode(Method::GET, &endpoint, &body)?;
        normalize_committees(data.data, epoch, P::SLOTS_PER_EPOCH).map_err(|message| {
            BeaconError::Unexpected {
                method: Method::GET,
                endpoint,
                message,
            }
        })
    }

    /// `GET /eth/v1/events?topics=..`: a stream of decoded events. The stream ends when the
    /// beacon node closes the connection; an undecodable event yields an error item and the
    /// stream goes on.
    pub async fn events<P: Preset>(
        &self,
        topics: &[EventTopic],
    ) -> Result<BoxStream<'static, Result<BeaconEvent<P>>>> {
        let query: Vec<(&str, String)> = topics
            .iter()
            .map(|t| ("topics", t.as_str().to_string()))
            .collect();
        let url = self.url("/eth/v1/events", &query)?;
        let endpoint = endpoint_of(&url);
        let method = Method::GET;
        let class = RequestClass::Events;
        let order = self.endpoints.order(class);
        let mut last = None;
        let mut connected = None;
        for (n, &i) in order.iter().enumerate() {
            let connect = self
                .http
                .get(self.on_endpoint(&url, i))
                .header(reqwest::header::ACCEPT, "text/event-stream")
                .send();
            let attempt = match self.endpoints.attempt_timeout(i, class, n) {
                None => connect.await,
                Some(t) => match tokio::time::timeout(t, connect).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.endpoints.failed(i, class);
                        last = Some(BeaconError::Timeout {
                            method: method.clone(),
                            endpoint: endpoint.clone(),
                        });
                        continue;
                    }
                },
            }
            .map_err(|e| Self::transport_error(&method, &endpoint, e));
            let err = match attempt {
                Ok(resp) if resp.status().is_success() => {
                    self.endpoints.succeeded(i, class, n == 0);
                    connected = Some((i, resp));
                    break;
                }
                Ok(resp) => {
                    let status = resp.status();
                    let body = read_limited(resp, MAX_RESPONSE_BODY)
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                    BeaconError::Status {
                        method: method.clone(),
                        endpoint: endpoint.clone(),
                        status,
                        body: snippet(&body),
                        items: None,
                    }
                }
                Err(e) => e,
            };
            if !Self::node_failed(&err) {
                return Err(err);
            }
            self.endpoints.failed(i, class);
            last = Some(err);
        }
        let Some((i, resp)) = connected else {
            return Err(last.expect("at least one endpoint"));
        };
        // A stream on a fallback goes back to a preferred endpoint once that one is healthy
        // again: the events go on from it, without a gap (heads start duties, and a fallback
        // may lag). A stream that ends by itself counts as a failure of its node: the reconnect
        // tries the others first.
        let back_to = Arc::new(std::sync::Mutex::new(None));
        let recovered = {
            let (client, back_to) = (self.clone(), back_to.clone());
            async move {
                let j = client.preferred_recovered(i).await;
                *back_to.lock().unwrap_or_else(|e| e.into_inner()) = Some(j);
            }
        };
        let (client, endpoints, topics) = (self.clone(), self.endpoints.clone(), topics.to_vec());
        let then = futures::stream::once(async move {
            let j = *back_to.lock().unwrap_or_else(|e| e.into_inner());
            let Some(j) = j else {
                endpoints.failed(i, class);
                return futures::stream::empty().boxed();
            };
            tracing::info!(from = %endpoints.url(i), to = %endpoints.url(j), "beacon node event stream fails back");
            endpoints.succeeded(j, class, true);
            match client.events_boxed::<P>(topics).await {
                Ok(s) => s,
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            }
        })
        .flatten();
        let stream = bounded_events(resp.bytes_stream())
            .eventsource()
            .map(move |item| match item {
                Ok(ev) => BeaconEvent::<P>::decode(&ev.event, &ev.data).map_err(|message| {
                    BeaconError::EventStream {
                        endpoint: endpoint.clone(),
                        message,
                    }
                }),
                Err(e) => Err(BeaconError::EventStream {
                    endpoint: endpoint.clone(),
                    message: e.to_string(),
                }),
            })
            .take_until(recovered)
            .chain(then);
        Ok(stream.boxed())
    }

    /// [`BeaconClient::events`] as a boxed future (the fail-back reconnects from inside a
    /// stream that `events` returns).
    fn events_boxed<P: Preset>(
        &self,
        topics: Vec<EventTopic>,
    ) -> futures::future::BoxFuture<'static, Result<BoxStream<'static, Result<BeaconEvent<P>>>>>
    {
        let client = self.clone();
        Box::pin(async move { client.events::<P>(&topics).await })
    }

    /// Resolves, for a stream held on endpoint `current`, to the first endpoint configured
    /// before it that answers `/eth/v1/node/health` with 200 (ready, not syncing); asks every
    /// [`Endpoints::fail_back_probe`] interval. Never resolves on the primary.
    async fn preferred_recovered(&self, current: usize) -> usize {
        if current == 0 {
            return std::future::pending().await;
        }
        let (every, timeout) = self.endpoints.fail_back_probe();
        loop {
            tokio::time::sleep(every).await;
            for j in 0..current {
                let Ok(url) = self.endpoints.url(j).join("eth/v1/node/health") else {
                    continue;
                };
                let probe = self.http.get(url).send();
                if let Ok(Ok(resp)) = tokio::time::timeout(timeout, probe).await {
                    if resp.status() == StatusCode::OK {
                        return j;
                    }
                }
            }
        }
    }
}

/// Reads a response body of at most `limit` bytes (`None`: it is longer).
async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
) -> std::result::Result<Option<Vec<u8>>, reqwest::Error> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// Bytes of an event stream since the last event ended (a blank line; CR, LF and CRLF end
/// lines), to cut a stream whose event outgrows [`MAX_EVENT`].
#[derive(Default)]
struct EventSize {
    bytes: usize,
    line_has_text: bool,
    after_cr: bool,
}

impl EventSize {
    /// Counts `chunk`; false once the current event is larger than [`MAX_EVENT`].
    fn feed(&mut self, chunk: &[u8]) -> bool {
        for &b in chunk {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\r' | b'\n' => {
                    if !self.line_has_text {
                        self.bytes = 0;
                    }
                    self.line_has_text = false;
                    self.after_cr = b == b'\r';
                }
                _ => {
                    self.line_has_text = true;
                    self.after_cr = false;
                    self.bytes += 1;
                }
            }
        }
        self.bytes <= MAX_EVENT
    }
}

/// `bytes` until an event outgrows [`MAX_EVENT`]: then one error, and the stream ends.
fn bounded_events(
    bytes: impl futures::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send + 'static,
) -> impl futures::Stream<Item = std::result::Result<axum::body::Bytes, std::io::Error>> + Send {
    bytes.scan((EventSize::default(), false), |(size, cut), chunk| {
        let item = match chunk {
            _ if *cut => None,
            Ok(c) if !size.feed(&c) => {
                *cut = true;
                Some(Err(std::io::Error::other(format!(
                    "event larger than {MAX_EVENT} bytes"
                ))))
            }
            Ok(c) => Some(Ok(c)),
            Err(e) => Some(Err(std::io::Error::other(e))),
        };
        futures::future::ready(item)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::types::{BlsPubkey, Root};
    use std::sync::Arc;
    use std::time::Instant;

    /// A beacon node on loopback answering every request with `chunks` copies of 64 KiB of
    /// `fill` after `head`, as `content_type`.
    async fn flooding_node(
        content_type: &'static str,
        head: &'static str,
        chunks: usize,
    ) -> String {
        static FILL: [u8; 1 << 16] = [b'a'; 1 << 16];
        let app = axum::Router::new().fallback(move || async move {
            let body = futures::stream::iter(
                std::iter::once(axum::body::Bytes::from_static(head.as_bytes()))
                    .chain(std::iter::repeat_n(
                        axum::body::Bytes::from_static(&FILL),
                        chunks,
                    ))
                    .map(Ok::<_, std::io::Error>),
            );
            (
                [(axum::http::header::CONTENT_TYPE, content_type)],
                axum::body::Body::from_stream(body),
            )
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused() {
        let chunks = MAX_RESPONSE_BODY / (1 << 16) + 1;
        let c = BeaconClient::new(&flooding_node("application/json", "", chunks).await).unwrap();
        let err = c.genesis().await.unwrap_err().to_string();
        assert!(err.contains("GET /eth/v1/beacon/genesis"), "{err}");
        assert!(
            err.contains(&format!("larger than {MAX_RESPONSE_BODY} bytes")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn oversized_events_end_the_stream_with_an_error() {
        let head = "event: block\ndata: {\"slot\":\"29\",\"block\":\"0x4bb3d8f2f09c4e42c584b8013ae8b602daa218f896538f6afa313d849e97f076\",\"execution_optimistic\":false}\r\n\r\ndata: ";
        // 64 MiB of one endless data line after a good event.
        let url = flooding_node("text/event-stream", head, 1024).await;
        let c = BeaconClient::new(&url).unwrap();
        let items: Vec<_> = c
            .events::<crate::eth::types::Minimal>(&[EventTopic::Block])
            .await
            .unwrap()
            .collect()
            .await;
        assert!(items[0].is_ok(), "{:?}", items[0]);
        assert_eq!(items.len(), 2, "the stream ends after the error");
        let err = items[1].as_ref().unwrap_err().to_string();
        assert!(
            err.contains(&format!("event larger than {MAX_EVENT} bytes")),
            "{err}"
        );
    }

    #[test]
    fn event_size_counts_from_the_last_blank_line() {
        let mut s = EventSize::default();
        assert!(s.feed(b"data: 1\r\ndata: 2\r\n"));
        assert_eq!(s.bytes, 14);
        assert!(s.feed(b"\r\n"));
        assert_eq!(s.bytes, 0);
        assert!(s.feed(b"data: 3\n\ndata: 45\r\r"));
        assert_eq!(s.bytes, 0);
        assert!(s.feed(b"data: 3\n"));
        assert_eq!(s.bytes, 7);
    }

    #[test]
    fn urls_repeat_list_parameters_and_keep_base_path() {
        let c = BeaconClient::new("http://127.0.0.1:5052/proxy").unwrap();
        let url = c
            .url(
                "/eth/v1/beacon/states/head/validators",
                &[("id", "1".into()), ("id", BlsPubkey::ZERO.to_string())],
            )
            .unwrap();
        assert_eq!(url.path(), "/proxy/eth/v1/beacon/states/head/validators");
        assert_eq!(url.query_pairs().filter(|(k, _)| k == "id").count(), 2);
        assert_eq!(
            endpoint_of(&url),
            format!(
                "/proxy/eth/v1/beacon/states/head/validators?id=1&id={}",
                BlsPubkey::ZERO
            )
        );
        assert!(BeaconClient::new("not a url").is_err());
        assert!(BeaconClient::new("ftp://127.0.0.1/").is_err());
        assert_eq!(
            BlockId::Root(Root::ZERO).to_string(),
            Root::ZERO.to_string()
        );
        assert_eq!(StateId::Slot(7).to_string(), "7");
    }

    #[tokio::test]
    async fn many_validator_ids_are_asked_in_requests_under_16_kib() {
        use axum::extract::{Query, State};
        use std::sync::{Arc, Mutex};
        // Answers each id with a validator whose index is its position in the request, and
        // records the URI length of every request.
        async fn validators(
            State(seen): State<Arc<Mutex<Vec<usize>>>>,
            uri: axum::http::Uri,
            Query(q): Query<Vec<(String, String)>>,
        ) -> axum::Json<serde_json::Value> {
            seen.lock().unwrap().push(uri.to_string().len());
            let data: Vec<serde_json::Value> = q
                .iter()
                .enumerate()
                .map(|(i, (_, id))| {
                    serde_json::json!({"index": i.to_string(), "balance": "1", "status": "active_ongoing",
                        "validator": {"pubkey": id, "withdrawal_credentials": Root::ZERO,
                        "effective_balance": "1", "slashed": false, "activation_eligibility_epoch": "0",
                        "activation_epoch": "0", "exit_epoch": "1", "withdrawable_epoch": "1"}})
                })
                .collect();
            axum::Json(serde_json::json!({ "data": data }))
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route(
                "/eth/v1/beacon/states/{state}/validators",
                axum::routing::get(validators),
            )
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let ids: Vec<ValidatorId> = (0..300u16)
            .map(|i| {
                let mut pk = [0u8; 48];
                pk[..2].copy_from_slice(&i.to_be_bytes());
                ValidatorId::Pubkey(BlsPubkey(pk))
            })
            .collect();
        let got = BeaconClient::new(&url)
            .unwrap()
            .state_validators(StateId::Head, &ids)
            .await
            .unwrap();
        assert_eq!(got.len(), 300);
        assert!(got
            .iter()
            .zip(&ids)
            .all(|(v, id)| ValidatorId::Pubkey(v.validator.pubkey) == *id));
        let uris = seen.lock().unwrap().clone();
        assert_eq!(uris.len(), 300_usize.div_ceil(VALIDATOR_IDS_PER_REQUEST));
        assert!(uris.iter().all(|n| *n < 16 * 1024), "{uris:?}");
        server.abort();
    }

    #[tokio::test]
    async fn unreachable_node_error_names_the_endpoint() {
        // Bind then drop a listener to get a local port with nothing behind it.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = BeaconClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = c.attestation_data(5, 1).await.unwrap_err();
        assert!(matches!(err, BeaconError::Transport { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("GET /eth/v1/validator/attestation_data?slot=5&committee_index=1"),
            "{err}"
        );
    }

    /// A beacon node on loopback that answers `/eth/v1/node/version` and attestation data,
    /// counts its hits, and fails with 503 while `down` is set.
    async fn counting_bn(
        name: &'static str,
    ) -> (
        String,
        Arc<std::sync::atomic::AtomicUsize>,
        Arc<std::sync::atomic::AtomicBool>,
    ) {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let hits = Arc::new(AtomicUsize::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let (h, d) = (hits.clone(), down.clone());
        let app = axum::Router::new().fallback(move || {
            let (h, d) = (h.clone(), d.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                if d.load(Ordering::SeqCst) {
                    return (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "down".to_string(),
                    );
                }
                (
                    axum::http::StatusCode::OK,
                    serde_json::json!({"data": {"version": name}}).to_string(),
                )
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        (url, hits, down)
    }

    #[tokio::test]
    async fn fails_over_to_the_fallback_and_back_to_the_primary() {
        use std::sync::atomic::Ordering;
        let (a, a_hits, a_down) = counting_bn("a").await;
        let (b, b_hits, _) = counting_bn("b").await;
        let mut registry = prometheus_client::registry::Registry::default();
        let c = BeaconClient::new(&format!("{a},{b}")).unwrap();
        c.endpoints().register_metrics(&mut registry);
        assert_eq!(c.node_version().await.unwrap(), "a");

        // The primary fails: the same request is answered by the fallback, and the primary is
        // skipped (not even tried) while it backs off.
        a_down.store(true, Ordering::SeqCst);
        assert_eq!(c.node_version().await.unwrap(), "b");
        let tried = a_hits.load(Ordering::SeqCst);
        assert_eq!(c.node_version().await.unwrap(), "b");
        assert_eq!(
            a_hits.load(Ordering::SeqCst),
            tried,
            "skipped while backing off"
        );
        assert!(c.endpoints().backing_off(0, RequestClass::Read));
        // Per class: attestation data has not failed on the primary yet.
        assert!(!c.endpoints().backing_off(0, RequestClass::Data));

        // The primary recovers: after its backoff the next request goes to it again.
        a_down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert_eq!(c.node_version().await.unwrap(), "a");
        assert!(!c.endpoints().backing_off(0, RequestClass::Read));
        assert!(b_hits.load(Ordering::SeqCst) >= 2);

        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("beacon_node_failovers_total{class=\"read\"} 1"),
            "{text}"
        );
        assert!(text.contains("result=\"error\""), "{text}");
    }

    /// A beacon node answering every request with `status` and `body`.
    async fn answering_bn(status: u16, body: &'static str) -> String {
        let app = axum::Router::new().fallback(move || async move {
            (axum::http::StatusCode::from_u16(status).unwrap(), body)
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        url
    }

    #[tokio::test]
    async fn a_duplicate_answer_is_the_outcome_and_an_answer_beats_a_dead_fallback() {
        use std::sync::atomic::Ordering;
        // Lodestar answers 500 when another node of the cluster submitted the object first:
        // the primary is fine, the request is done — no failover, no backoff.
        let dup = answering_bn(
            500,
            r#"{"code":500,"message":"ATTESTATION_ERROR_ATTESTATION_ALREADY_KNOWN"}"#,
        )
        .await;
        let (b, b_hits, _) = counting_bn("b").await;
        let c = BeaconClient::new(&format!("{dup},{b}")).unwrap();
        let err = c.node_version().await.unwrap_err();
        assert!(already_known(&err.to_string()), "{err}");
        assert_eq!(b_hits.load(Ordering::SeqCst), 0);
        assert!(!c.endpoints().backing_off(0, RequestClass::Read));

        // Every node failing: the answer of the one that answered (why it refused) is
        // returned, not the dead fallback's connection error.
        let syncing = answering_bn(503, r#"{"code":503,"message":"Node is syncing"}"#).await;
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let c = BeaconClient::new(&format!("{syncing},{dead}")).unwrap();
        let err = c.node_version().await.unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE), "{err}");
        assert!(c.endpoints().backing_off(0, RequestClass::Read));
        assert!(c.endpoints().backing_off(1, RequestClass::Read));
    }

    #[tokio::test]
    async fn a_primary_that_still_hangs_costs_a_probe_not_a_timeout() {
        // A primary that accepts connections and never answers (a beacon node that hangs, or
        // a host that is gone and times the connection out).
        let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hung_url = format!("http://{}", hung.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = hung.accept().await {
                held.push(sock);
            }
        });
        let (b, _, _) = counting_bn("b").await;
        let ms = Duration::from_millis;
        let endpoints = Endpoints::parse(&format!("{hung_url},{b}"))
            .unwrap()
            .with_backoff(ms(50))
            .with_probe_timeout(ms(100));
        let c = BeaconClient::with_endpoints(endpoints, ms(1_000), ms(1_000)).unwrap();

        // First request: the primary looks healthy, so it gets the whole request timeout.
        let t = Instant::now();
        assert_eq!(c.node_version().await.unwrap(), "b");
        assert!(t.elapsed() >= ms(1_000), "{:?}", t.elapsed());
        // After the backoff the primary is tried first again, but only for the probe timeout.
        tokio::time::sleep(ms(60)).await;
        let t = Instant::now();
        assert_eq!(c.node_version().await.unwrap(), "b");
        assert!(t.elapsed() < ms(600), "{:?}", t.elapsed());
        assert!(c.endpoints().backing_off(0, RequestClass::Read));
    }

    #[test]
    fn snippets_are_bounded_and_utf8_safe() {
        let long = "é".repeat(600);
        let s = snippet(long.as_bytes());
        assert!(s.ends_with('…'));
        assert!(s.len() <= BODY_SNIPPET_LEN + '…'.len_utf8());
    }

    /// A beacon node serving `head` events (slots `base`, `base + 1`, … every 50 ms) and
    /// `/eth/v1/node/health`; everything answers 503 while `down` is set.
    async fn heads_bn(base: u64) -> (String, Arc<std::sync::atomic::AtomicBool>) {
        use axum::response::IntoResponse;
        use std::sync::atomic::{AtomicBool, Ordering};
        let down = Arc::new(AtomicBool::new(false));
        let d = down.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let d = d.clone();
            async move {
                if d.load(Ordering::SeqCst) {
                    return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
                }
                if uri.path() != "/eth/v1/events" {
                    return (axum::http::StatusCode::OK, "{}").into_response();
                }
                let z = format!("0x{}", "00".repeat(32));
                let heads = futures::stream::unfold(base, move |slot| {
                    let z = z.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let ev = format!(
                            "event: head\ndata: {{\"slot\":\"{slot}\",\"block\":\"{z}\",\"state\":\"{z}\",\"epoch_transition\":false,\"previous_duty_dependent_root\":\"{z}\",\"current_duty_dependent_root\":\"{z}\",\"execution_optimistic\":false}}\n\n"
                        );
                        Some((Ok::<_, std::convert::Infallible>(ev), slot + 1))
                    }
                });
                (
                    [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
                    axum::body::Body::from_stream(heads),
                )
                    .into_response()
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        (url, down)
    }

    #[tokio::test]
    async fn the_event_stream_fails_back_to_the_recovered_primary_without_ending() {
        use std::sync::atomic::Ordering;
        let (a, a_down) = heads_bn(100).await;
        let (b, _) = heads_bn(200).await;
        a_down.store(true, Ordering::SeqCst);
        let ms = Duration::from_millis;
        let endpoints = Endpoints::parse(&format!("{a},{b}"))
            .unwrap()
            .with_backoff(ms(50))
            .with_probe_timeout(ms(100));
        let c = BeaconClient::with_endpoints(endpoints, ms(5_000), ms(1_000)).unwrap();
        let mut events = c
            .events::<crate::eth::types::Minimal>(&[EventTopic::Head])
            .await
            .unwrap();
        let mut next_slot = async || match tokio::time::timeout(ms(2_000), events.next()).await {
            Ok(Some(Ok(BeaconEvent::Head(h)))) => h.slot,
            other => panic!("the stream must go on with heads: {other:?}"),
        };
        // The primary is down: the stream runs on the fallback, and stays there while the
        // primary's health probes (every 100 ms here) fail.
        for _ in 0..8 {
            assert!(next_slot().await >= 200);
        }
        a_down.store(false, Ordering::SeqCst);
        let since = tokio::time::Instant::now();
        while next_slot().await >= 200 {
            assert!(since.elapsed() < ms(1_500), "still on the fallback");
        }
        // The same stream now carries the primary's heads, and the primary is preferred again.
        assert!(next_slot().await < 200);
        assert_eq!(c.endpoints().order(RequestClass::Events)[0], 0);
    }
}
