//! The metrics endpoint's sockets, on the coordinator shard: accepts HTTP connections, reads
//! one bounded request head each (within a deadline), answers it and closes. Bounded in
//! connections, bytes and time; nothing a peer sends can panic or stall the shard. With
//! `metrics_tls` each connection is TLS (HTTPS), with `metrics_basic_auth_file` each request
//! must carry the configured HTTP basic authentication.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use futures_rustls::TlsAcceptor;
use glommio::net::TcpListener;
use shards::node::Node;

use super::http::{parse_head, refusal, response, route, BasicAuth, Route, Status};
use super::text::CONTENT_TYPE;
use super::Metrics;

/// Metrics connections served at once; more are closed without an answer (a scraper needs one).
pub const MAX_METRICS_CONNECTIONS: usize = 16;

/// Bytes asked of the socket per read (a request head is at most `MAX_REQUEST_HEAD_BYTES`).
const READ_CHUNK: usize = 1024;

/// Serves `listener` until the task running it is dropped. `deadline` bounds a connection's
/// whole life (reading the head, scraping, writing): a slower peer is dropped
/// (`metrics_timeout_ms`).
pub async fn serve(
    listener: TcpListener,
    metrics: Rc<Metrics>,
    node: Node,
    deadline: Duration,
    tls: Option<TlsAcceptor>,
    auth: Option<BasicAuth>,
) {
    let open = Rc::new(Cell::new(0usize));
    let (tls, auth) = (Rc::new(tls), Rc::new(auth));
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                // EMFILE and friends: the client protocol matters more; try again shortly.
                tracing::warn!(error = %e, "accepting a metrics connection");
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if open.get() >= MAX_METRICS_CONNECTIONS {
            drop(stream);
            continue;
        }
        open.set(open.get() + 1);
        let (metrics, node, open, tls, auth) = (metrics.clone(), node.clone(), open.clone(), tls.clone(), auth.clone());
        glommio::spawn_local(async move {
            let served = async {
                let auth = (*auth).as_ref();
                match &*tls {
                    None => answer(stream, &metrics, &node, auth).await,
                    Some(tls) => match tls.accept(stream).await {
                        Ok(stream) => answer(stream, &metrics, &node, auth).await,
                        Err(e) => tracing::debug!(error = %e, "metrics TLS handshake failed"),
                    },
                }
            };
            futures_lite::future::or(served, glommio::timer::sleep(deadline)).await;
            open.set(open.get() - 1);
        })
        .detach();
    }
}

/// Reads one request head and answers it; the connection closes after the answer.
async fn answer(
    mut stream: impl futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
    metrics: &Metrics,
    node: &Node,
    auth: Option<&BasicAuth>,
) {
    let mut received = Vec::with_capacity(READ_CHUNK);
    let mut chunk = [0u8; READ_CHUNK];
    let head = loop {
        match parse_head(&received) {
            Ok(Some(head)) => break Ok(head),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        match stream.read(&mut chunk).await {
            Ok(n) if n > 0 => received.extend_from_slice(&chunk[..n]),
            // Closed or reset before a whole head arrived: nobody to answer.
            _ => return,
        }
    };
    let bytes = match head {
        Err(e) => refusal(e.status(), &e.to_string()),
        Ok(head) => match route(&head, auth) {
            Route::Refuse(status) => refusal(status, &format!("{} {}: try GET /metrics", head.method, head.path)),
            Route::Metrics { head_only } => match metrics.scrape(node).await {
                Ok(body) => response(Status::Ok, CONTENT_TYPE, body.as_bytes(), head_only),
                Err(e) => refusal(Status::InternalError, &format!("gathering shard counters: {e}")),
            },
        },
    };
    let _ = stream.write_all(&bytes).await;
    let _ = stream.flush().await;
    let _ = stream.close().await;
}
