//! What comes back from a cluster's API server, seen at the HTTP level of its client: every answer and every
//! byte of a body is evidence that the server is alive (a busy cluster then needs no liveness probe), and no
//! answer can grow without bound (kube reads a LIST page whole, and a watch event up to its newline,
//! whatever their size).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response};
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Duration, Instant};
use tower::{BoxError, Layer, Service};

/// When the API server last sent anything, on the tokio clock.
#[derive(Debug)]
pub(crate) struct Evidence {
    origin: Instant,
    /// Milliseconds since `origin`.
    last: AtomicU64,
}

impl Evidence {
    /// Counts from now, as if the server had just answered: a cluster is not silent before it was asked.
    pub(crate) fn new() -> Evidence {
        Evidence {
            origin: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    pub(crate) fn record(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    pub(crate) fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}

/// An answer larger than `[kubernetes] max_body`.
#[derive(Debug, thiserror::Error)]
#[error("the answer to GET {request} is larger than max_body ({limit} bytes{per}); raise max_body of {section} if objects that large are expected")]
pub(crate) struct TooLarge {
    request: String,
    limit: u64,
    per: &'static str,
    section: Arc<str>,
}

/// Whether `e` (or one of its causes) is an answer larger than `max_body`.
pub(crate) fn too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if s.is::<TooLarge>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Records evidence and bounds bodies: a whole body for a plain request, each event (line) of a watch.
#[derive(Debug, Clone)]
pub(crate) struct AnswersLayer {
    pub evidence: Arc<Evidence>,
    pub max_body: u64,
    /// `[kubernetes]` or `[clusters.NAME]`, for the message.
    pub section: Arc<str>,
}

impl<S> Layer<S> for AnswersLayer {
    type Service = Answers<S>;
    fn layer(&self, inner: S) -> Answers<S> {
        Answers {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Answers<S> {
    inner: S,
    layer: AnswersLayer,
}

impl<S, ReqBody, B> Service<Request<ReqBody>> for Answers<S>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Response = Response<Bounded<B>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let per_line = req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
        let request = req.uri().path().to_string();
        let layer = self.layer.clone();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let response = answer.await?;
            layer.evidence.record();
            Ok(response.map(|inner| Bounded {
                inner,
                seen: 0,
                per_line,
                request,
                layer,
            }))
        })
    }
}

/// A response body that records evidence for each frame and fails past its bound.
pub(crate) struct Bounded<B> {
    inner: B,
    /// Bytes of the whole body, or since the last newline of a watch.
    seen: u64,
    per_line: bool,
    request: String,
    layer: AnswersLayer,
}

impl<B> Bounded<B> {
    fn count(&mut self, data: &[u8]) -> Result<(), TooLarge> {
        let mut rest = data;
        if self.per_line {
            // memchr: this runs over every byte of every watch event.
            while let Some(at) = memchr::memchr(b'\n', rest) {
                if self.seen.saturating_add(at as u64) > self.layer.max_body {
                    return Err(self.too_large());
                }
                self.seen = 0;
                rest = &rest[at + 1..];
            }
        }
        self.seen = self.seen.saturating_add(rest.len() as u64);
        if self.seen > self.layer.max_body {
            return Err(self.too_large());
        }
        Ok(())
    }

    fn too_large(&self) -> TooLarge {
        TooLarge {
            request: self.request.clone(),
            limit: self.layer.max_body,
            per: if self.per_line {
                " per watch event"
            } else {
                ""
            },
            section: self.layer.section.clone(),
        }
    }
}

impl<B> Body for Bounded<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.layer.evidence.record();
                if let Some(data) = frame.data_ref() {
                    if let Err(e) = this.count(data) {
                        return Poll::Ready(Some(Err(e.into())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn bounded(
        per_line: bool,
        max_body: u64,
        chunks: &[&'static [u8]],
    ) -> impl Body<Data = Bytes, Error = BoxError> {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        Bounded {
            inner: StreamBody::new(futures::stream::iter(frames)),
            seen: 0,
            per_line,
            request: "/api/v1/pods".into(),
            layer: AnswersLayer {
                evidence: Arc::new(Evidence::new()),
                max_body,
                section: "[kubernetes]".into(),
            },
        }
    }

    async fn read(body: impl Body<Data = Bytes, Error = BoxError>) -> Result<usize, String> {
        body.collect()
            .await
            .map(|b| b.to_bytes().len())
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn a_whole_body_is_bounded() {
        assert_eq!(
            read(bounded(false, 10, &[b"12345", b"67890"])).await,
            Ok(10)
        );
        let e = read(bounded(false, 10, &[b"12345", b"678\n90", b"1"]))
            .await
            .expect_err("11 bytes");
        assert_eq!(
            e,
            "the answer to GET /api/v1/pods is larger than max_body (10 bytes); raise max_body of [kubernetes] if objects that large are expected"
        );
    }

    #[tokio::test]
    async fn a_watch_is_bounded_per_event_however_long_it_streams() {
        let many: Vec<&'static [u8]> = std::iter::repeat_n(&b"{\"a\":1}\n{\"b\""[..], 100)
            .chain([&b":2}\n{\"c\":3}\n{\"d\":4}\n{\"e\":5}\n"[..]])
            .collect();
        assert!(read(bounded(true, 12, &many)).await.is_ok());
        let e = read(bounded(
            true,
            12,
            &[b"{\"a\":1}\n{\"b\":", b"\"0123456789\"}\n"],
        ))
        .await
        .expect_err("the second event is too long");
        assert!(e.ends_with("(12 bytes per watch event); raise max_body of [kubernetes] if objects that large are expected"), "{e}");
    }

    #[tokio::test]
    async fn every_frame_is_evidence() {
        let evidence = Arc::new(Evidence::new());
        let before = evidence.last();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> =
            vec![Ok(Frame::data(Bytes::from_static(b"x")))];
        let body = Bounded {
            inner: StreamBody::new(futures::stream::iter(frames)),
            seen: 0,
            per_line: true,
            request: "/version".into(),
            layer: AnswersLayer {
                evidence: evidence.clone(),
                max_body: 10,
                section: "[kubernetes]".into(),
            },
        };
        read(body).await.expect("small");
        assert!(evidence.last() > before);
    }
}
