//! One client connection of the egress proxy: HTTP/1 served by hyper, each
//! request either a CONNECT tunnel or a forwarded absolute-form request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, EXPECT, HOST};
use http::uri::{Authority, Scheme};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::ext::ReasonPhrase;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::allow::{Allowlist, Host, Target};
use crate::server::{ConnContext, splice};

/// What every connection needs from the configuration.
pub(crate) struct Settings {
    pub(crate) allowlist: Allowlist,
    pub(crate) dial_timeout: Duration,
    pub(crate) header_read_timeout: Duration,
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the non-standard but common
/// `Proxy-Connection` and `Keep-Alive`): they describe one connection and
/// are never forwarded. Framing (`Transfer-Encoding`) is redone by hyper
/// on each side.
const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// Serves HTTP/1 on one accepted client connection.
pub(crate) async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    cx: ConnContext,
    settings: Arc<Settings>,
) {
    if let Err(e) = tcp.set_nodelay(true) {
        debug!("cannot set TCP_NODELAY: {e}");
    }
    let header_read_timeout = settings.header_read_timeout;
    let service_cx = cx.clone();
    let service = service_fn(move |req| {
        let settings = settings.clone();
        let cx = service_cx.clone();
        async move { Ok::<_, Infallible>(handle(req, peer, &settings, &cx).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        debug!("client connection ended: {e}");
    }
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    settings: &Settings,
    cx: &ConnContext,
) -> Response<ProxyBody> {
    if req.method() == Method::CONNECT {
        connect(req, peer, settings, cx).await
    } else {
        forward(req, peer, settings, cx).await
    }
}

/// `CONNECT host:port`: check, dial, answer 200, then splice the upgraded
/// client connection and the target.
async fn connect(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    settings: &Settings,
    cx: &ConnContext,
) -> Response<ProxyBody> {
    let Some(authority) = req.uri().authority().cloned() else {
        return text(
            StatusCode::BAD_REQUEST,
            "CONNECT needs a host:port target\n",
        );
    };
    let target = match Target::from_authority(&authority, None) {
        Ok(t) => t,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    if !settings.allowlist.permits(&target) {
        return refuse(&target, peer, &Method::CONNECT);
    }
    let mut upstream = match dial(&target, settings.dial_timeout).await {
        Ok(s) => s,
        Err(refusal) => return refusal.into_response(),
    };
    debug!(%target, client = %peer, "CONNECT tunnel established");
    let on_upgrade = hyper::upgrade::on(&mut req);
    let tunnel_cx = cx.clone();
    cx.spawn(async move {
        // Keeps the connection's slot taken while the tunnel lives.
        let _slot = tunnel_cx.permit;
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                match splice(&mut client, &mut upstream).await {
                    Ok((up, down)) => {
                        debug!(%target, bytes_to_target = up, bytes_to_client = down, "tunnel closed");
                    }
                    Err(e) => debug!(%target, "tunnel ended: {e}"),
                }
            }
            Err(e) => debug!(%target, "CONNECT: the client connection was not handed over: {e}"),
        }
    });
    let mut response = Response::new(empty());
    response
        .extensions_mut()
        .insert(ReasonPhrase::from_static(b"Connection Established"));
    response
}

/// Absolute-form `METHOD http://host[:port]/path`: check, dial, send the
/// request in origin form with hop-by-hop headers removed, stream the
/// response back.
async fn forward(
    req: Request<Incoming>,
    peer: SocketAddr,
    settings: &Settings,
    cx: &ConnContext,
) -> Response<ProxyBody> {
    let uri = req.uri().clone();
    let Some(scheme) = uri.scheme() else {
        return text(
            StatusCode::BAD_REQUEST,
            "this is a forward proxy: send absolute-form requests (GET http://host/path) or CONNECT\n",
        );
    };
    if *scheme != Scheme::HTTP {
        return text(
            StatusCode::BAD_REQUEST,
            format!("only http:// URLs are forwarded, not {scheme}://; use CONNECT for https\n"),
        );
    }
    let Some(authority) = uri.authority() else {
        return text(StatusCode::BAD_REQUEST, "the request URL has no host\n");
    };
    let target = match Target::from_authority(authority, Some(80)) {
        Ok(t) => t,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    if !settings.allowlist.permits(&target) {
        return refuse(&target, peer, req.method());
    }
    let (parts, body) = req.into_parts();
    let outgoing = match origin_form_request(parts, body, authority) {
        Ok(r) => r,
        Err(refusal) => return refusal.into_response(),
    };

    let upstream = match dial(&target, settings.dial_timeout).await {
        Ok(s) => s,
        Err(refusal) => return refusal.into_response(),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(upstream))
        .await
    {
        Ok(x) => x,
        Err(e) => return bad_gateway(&target, &e),
    };
    let conn_target = target.clone();
    cx.spawn(async move {
        if let Err(e) = conn.await {
            debug!(target = %conn_target, "upstream connection ended: {e}");
        }
    });
    debug!(%target, client = %peer, method = %outgoing.method(), "forwarding");
    match sender.send_request(outgoing).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Err(e) => bad_gateway(&target, &e),
    }
}

/// The request as sent to the origin server: origin-form target, HTTP/1.1,
/// no hop-by-hop headers, and `Host` from the request target (RFC 9112
/// §3.2.2: a proxy replaces a received Host with the target's authority).
fn origin_form_request(
    mut parts: http::request::Parts,
    body: Incoming,
    authority: &Authority,
) -> Result<Request<Incoming>, Refusal> {
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    parts.uri = Uri::from(path);
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    // hyper has already answered `Expect: 100-continue` towards the client
    // (when the body was first read); the origin must not wait for it again.
    parts.headers.remove(EXPECT);
    let host = match authority.port() {
        Some(port) => format!("{}:{port}", authority.host()),
        None => authority.host().to_owned(),
    };
    let host = HeaderValue::from_str(&host)
        .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, "invalid host in the request URL\n"))?;
    parts.headers.insert(HOST, host);
    Ok(Request::from_parts(parts, body))
}

/// Removes the hop-by-hop headers and every header `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Resolves and connects to `target` within `timeout`.
async fn dial(target: &Target, timeout: Duration) -> Result<TcpStream, Refusal> {
    let connect = async {
        match &target.host {
            Host::Ip(ip) => TcpStream::connect((*ip, target.port)).await,
            Host::Name(name) => TcpStream::connect((name.as_str(), target.port)).await,
        }
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(stream)) => {
            if let Err(e) = stream.set_nodelay(true) {
                debug!("cannot set TCP_NODELAY: {e}");
            }
            Ok(stream)
        }
        Ok(Err(e)) => {
            info!(%target, "egress dial failed: {e}");
            Err(Refusal::new(
                StatusCode::BAD_GATEWAY,
                format!("cannot connect to {target}: {e}\n"),
            ))
        }
        Err(_) => {
            info!(%target, ?timeout, "egress dial timed out");
            Err(Refusal::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("timed out connecting to {target} after {timeout:?}\n"),
            ))
        }
    }
}

/// A request the proxy answers itself, with this status and text.
struct Refusal(StatusCode, String);

impl Refusal {
    fn new(status: StatusCode, text: impl Into<String>) -> Self {
        Self(status, text.into())
    }

    fn into_response(self) -> Response<ProxyBody> {
        text(self.0, self.1)
    }
}

fn refuse(target: &Target, peer: SocketAddr, method: &Method) -> Response<ProxyBody> {
    warn!(%target, client = %peer, %method, "egress refused: target not on the allowlist");
    text(
        StatusCode::FORBIDDEN,
        format!("host {target} is not on the egress allowlist\n"),
    )
}

fn bad_gateway(target: &Target, e: &hyper::Error) -> Response<ProxyBody> {
    info!(%target, "egress upstream request failed: {e}");
    text(
        StatusCode::BAD_GATEWAY,
        format!("request to {target} failed: {e}\n"),
    )
}

fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_listed_and_connection_named_headers_only() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "close, X-Hop"),
            ("connection", "x-other-hop"),
            ("x-hop", "1"),
            ("x-other-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("proxy-authenticate", "Basic"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-end-to-end", "kept"),
            ("content-length", "3"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-end-to-end", "content-length"]);
    }
}
