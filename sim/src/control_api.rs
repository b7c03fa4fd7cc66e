//! The control API: plain HTTP verbs that drive a running [`SimControlPlane`] into faults and out again
//! (`curl -X POST …`), for the demo, benchmarks and tests of the binary.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::estate::BindingState;
use crate::{
    BackendMode, ManagedKind, ManagedState, OddEntries, PackageHealth, PackageKind, PodState,
    SimControlPlane, WatchFault,
};

/// Serves the control API on `listener` until the process ends.
pub async fn serve(listener: TcpListener, cp: SimControlPlane) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let cp = cp.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let cp = cp.clone();
                async move { Ok::<_, std::convert::Infallible>(control(&cp, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Every verb, as `GET /` shows it.
pub const HELP: &str = "klutch-sim control API (POST unless noted):
  /provider/NAME/healthy | /provider/NAME/unhealthy
  /providerconfig/NAME/degrade | /providerconfig/NAME/heal
  /deployment/NAMESPACE/NAME/available | /deployment/NAMESPACE/NAME/unavailable
  /deployment/NAMESPACE/NAME/lagging              metadata.generation one ahead of status.observedGeneration
  /deployment/NAMESPACE/NAME/deadline-exceeded | …/progressing    Progressing=False ProgressDeadlineExceeded
  /backend-deployment/anynines-backend | /backend-deployment/klutch-bind-backend   rename bind's backend
  /package/providers|configurations|functions/NAME/healthy | …/unhealthy (Crossplane 1.x wording)
      | …/unhealthy-v2 (2.x wording) | …/bump-generation (observedGeneration stays behind)
  /package/providers/NAME/scaled-to-zero | …/activate   Crossplane 2: AwaitingActivation and no pods, or back
  /konnector/NAMESPACE/silence | …/resume | …/skew/SECONDS (konnector clock offset, may be negative)
  /clusterbinding/NAMESPACE/add   bind another app cluster (heartbeatInterval 30s)
  /appclusterbinding/NAMESPACE/NAME/ready | …/secret-invalid | …/not-ready     its conditions
      | …/konnector-missing | …/konnector-back    the konnector Deployment the control plane runs for it
      | …/add | …/add-app-mode   another binding, its konnector on the control plane or in the app cluster
      (the konnector's availability: /deployment/klutch-bind-NAMESPACE-NAME/konnector-NAME/unavailable)
  /pod/evicted|completed|terminating|unschedulable/add | …/remove   a provider-anynines pod beside the Ready one
  /provider-anynines/crash-loop | …/recover   its pod in CrashLoopBackOff, the Provider Healthy=False, the
      health server refusing, ProviderConfigs no longer re-checked (one broken part, many symptoms)
  /backend/mode/healthy|500|hang|slow|garbage|not-object|huge|truncated|reset|refuse|duplicate-keys|html
  /backend/entries/empty|endpoint|invalid-names|many|seeded      odd bodies (many: 10 000 keys)
  /api/down | /api/up | /api/cut-watches | /api/compact | /api/expire | /api/hang | /api/unhang
  /api/freeze | /api/unfreeze       accept connections, answer nothing, open watches fall silent
  /api/bookmarks/off | /api/bookmarks/on
  /api/streaming/off | /api/streaming/on   streaming lists (sendInitialEvents) refused with 422, as with
      the WatchList feature gate off (v1.33's default), or served (v1.34 on)
  /api/watch/forbidden | /api/watch/error | /api/watch/ok     watches fail (403, ERROR event); LIST works
  /api/watch/PLURAL/forbidden | …/error | …/ok                the same for one resource (e.g. pods)
  /api/endless/PLURAL/on | …/off    every LIST page of PLURAL (e.g. pods) continues forever
  /api/list/PLURAL/forbidden | …/ok  LIST of PLURAL answers 403 (watches unaffected)
  /managed/KIND/NAME/ready|failing|creating|deleting|paused|pending|unavailable | …/remove
      KIND: serviceinstances|servicebindings|backups|restores; a missing NAME is created
  /managed/KIND/many/N[/STATE[/PROVIDERCONFIG]]   N more of KIND (default ready, the kind's ProviderConfig)
  /crd/PLURAL.GROUP/delete | …/create   e.g. backups.dataservices.anynines.com: gone (404), then back empty
  /objects            apply a JSON object or an array of objects (body)
  GET /stats          request counts of both fakes
";

/// What a verb did: done, refused (400 with the reason), or no such verb (404).
enum Outcome {
    Done(String),
    Refused(String),
    Unknown,
}

use Outcome::{Done, Refused, Unknown};

fn done() -> Outcome {
    Done("done\n".to_string())
}

fn answer(code: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = code;
    r
}

async fn control(cp: &SimControlPlane, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let outcome = match *req.method() {
        Method::GET => match parts.as_slice() {
            ["stats"] => Done(format!("{}\n", stats(cp))),
            _ => Done(HELP.to_string()),
        },
        Method::POST => match parts.as_slice() {
            ["objects"] => match req.into_body().collect().await {
                Ok(b) => apply_objects(cp, &b.to_bytes()),
                Err(e) => Refused(format!("cannot read body: {e}")),
            },
            ["api", rest @ ..] => api_verb(cp, rest),
            ["backend", rest @ ..] => backend_verb(cp, rest),
            ["package", plural, name, verb] => package_verb(cp, plural, name, verb),
            ["konnector", ns, rest @ ..] => konnector_verb(cp, ns, rest),
            ["managed", plural, rest @ ..] => managed_verb(cp, plural, rest),
            ["crd", crd, verb @ ("delete" | "create")] => {
                if cp.api.set_crd(crd, *verb == "create") {
                    done()
                } else {
                    Refused(format!("no resource {crd:?} (write PLURAL.GROUP, e.g. backups.dataservices.anynines.com)"))
                }
            }
            ["clusterbinding", ns, "add"] => {
                cp.add_cluster_binding(ns, Duration::from_secs(30));
                done()
            }
            ["appclusterbinding", ns, name, verb] => app_binding_verb(cp, ns, name, verb),
            _ => estate_verb(cp, &parts),
        },
        _ => return answer(StatusCode::METHOD_NOT_ALLOWED, HELP.to_string()),
    };
    match outcome {
        Done(text) => answer(StatusCode::OK, text),
        Refused(why) => answer(StatusCode::BAD_REQUEST, format!("{why}\n{HELP}")),
        Unknown => answer(StatusCode::NOT_FOUND, HELP.to_string()),
    }
}

fn stats(cp: &SimControlPlane) -> Value {
    let requests = cp.api.requests();
    let watches = requests.iter().filter(|r| r.is_watch).count();
    json!({"api_requests": requests.len(), "api_watch_requests": watches,
           "backend_requests": cp.backend.request_count(),
           "backend_connections": cp.backend.connection_count()})
}

fn apply_objects(cp: &SimControlPlane, body: &[u8]) -> Outcome {
    let objects = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(items)) => items,
        Ok(obj) => vec![obj],
        Err(e) => return Refused(format!("invalid JSON: {e}")),
    };
    for obj in objects {
        if let Err(e) = cp.api.try_apply(obj) {
            return Refused(e.to_string());
        }
    }
    done()
}

fn api_verb(cp: &SimControlPlane, rest: &[&str]) -> Outcome {
    let api = &cp.api;
    match rest {
        ["down"] => api.set_down(true),
        ["up"] => api.set_down(false),
        ["cut-watches"] => api.cut_watches(),
        ["compact"] => api.compact(),
        ["expire"] => api.expire_watches(),
        ["hang"] => api.set_hang(true),
        ["unhang"] => api.set_hang(false),
        ["freeze"] => api.set_frozen(true),
        ["unfreeze"] => api.set_frozen(false),
        ["bookmarks", "off"] => api.set_bookmarks(false),
        ["bookmarks", "on"] => api.set_bookmarks(true),
        ["streaming", "off"] => api.set_streaming(false),
        ["streaming", "on"] => api.set_streaming(true),
        ["watch", "forbidden"] => api.set_watch_fault(Some(WatchFault::Forbidden)),
        ["watch", "error"] => api.set_watch_fault(Some(WatchFault::ErrorEvent)),
        ["watch", "ok"] => api.set_watch_fault(None),
        ["watch", plural, fault @ ("forbidden" | "error" | "ok")] => {
            let fault = match *fault {
                "forbidden" => Some(WatchFault::Forbidden),
                "error" => Some(WatchFault::ErrorEvent),
                _ => None,
            };
            api.set_watch_fault_for(plural, fault)
        }
        ["endless", plural, on @ ("on" | "off")] => api.set_endless_list(plural, *on == "on"),
        ["list", plural, fault @ ("forbidden" | "ok")] => {
            api.set_list_forbidden(plural, *fault == "forbidden")
        }
        _ => return Unknown,
    }
    done()
}

fn backend_verb(cp: &SimControlPlane, rest: &[&str]) -> Outcome {
    match rest {
        ["mode", mode] => {
            let mode = match *mode {
                "healthy" => BackendMode::Healthy,
                "500" => BackendMode::Status500,
                "hang" => BackendMode::Hang,
                "slow" => BackendMode::Slow(Duration::from_secs(5)),
                "garbage" => BackendMode::Garbage,
                "not-object" => BackendMode::NotObject,
                "huge" => BackendMode::Huge(2 * 1024 * 1024),
                "truncated" => BackendMode::Truncated,
                "reset" => BackendMode::Reset,
                "refuse" => BackendMode::Refuse,
                "duplicate-keys" => BackendMode::DuplicateKeys,
                "html" => BackendMode::Html,
                other => return Refused(format!("unknown mode {other:?}")),
            };
            cp.backend.set_mode(mode);
        }
        ["entries", which] => {
            let odd = match *which {
                "seeded" => {
                    cp.reset_backend_entries();
                    return done();
                }
                "empty" => OddEntries::Empty,
                "endpoint" => OddEntries::Endpoint,
                "invalid-names" => OddEntries::InvalidNames,
                "many" => OddEntries::Many(10_000),
                other => return Refused(format!("unknown entries {other:?}")),
            };
            cp.backend.set_entries(odd.entries());
        }
        _ => return Unknown,
    }
    done()
}

/// Verbs on the seeded objects.
fn estate_verb(cp: &SimControlPlane, parts: &[&str]) -> Outcome {
    match parts {
        ["provider", name, "healthy"] => cp.set_provider_healthy(name, true),
        ["provider", name, "unhealthy"] => cp.set_provider_healthy(name, false),
        ["providerconfig", name, "degrade"] => cp.degrade_provider_config(
            name,
            "Get \"http://example-backup-manager.example.svc:3000/instances\": dial tcp 10.96.12.7:3000: connect: connection refused",
        ),
        ["providerconfig", name, "heal"] => cp.heal_provider_config(name),
        ["deployment", ns, name, "available"] => cp.set_deployment_available(ns, name, true),
        ["deployment", ns, name, "unavailable"] => cp.set_deployment_available(ns, name, false),
        ["deployment", ns, name, verb @ ("lagging" | "deadline-exceeded" | "progressing")] => {
            let found = match *verb {
                "lagging" => cp.set_deployment_lagging(ns, name),
                exceeded => cp.set_deployment_deadline_exceeded(ns, name, exceeded == "deadline-exceeded"),
            };
            if !found {
                return Refused(format!("no Deployment {ns}/{name}"));
            }
        }
        ["backend-deployment", name @ ("anynines-backend" | "klutch-bind-backend")] => {
            cp.rename_backend_deployment(name)
        }
        ["provider-anynines", verb @ ("crash-loop" | "recover")] => {
            cp.crash_loop_provider(*verb == "crash-loop")
        }
        ["pod", state, verb @ ("add" | "remove")] => {
            let Some(state) = PodState::from_word(state) else {
                return Refused(format!("unknown pod state {state:?}"));
            };
            if *verb == "add" {
                return Done(format!("{}\n", cp.add_provider_pod(state)));
            }
            cp.remove_provider_pod(state);
        }
        _ => return Unknown,
    }
    done()
}

fn package_verb(cp: &SimControlPlane, plural: &str, name: &str, verb: &str) -> Outcome {
    let Some(kind) = PackageKind::from_plural(plural) else {
        return Refused(format!(
            "unknown package kind {plural:?}: providers, configurations or functions"
        ));
    };
    let health = match verb {
        "scaled-to-zero" | "activate" if kind == PackageKind::Provider => {
            return if cp.set_provider_scaled_to_zero(name, verb == "scaled-to-zero") {
                done()
            } else {
                Refused(format!("no Provider {name:?}"))
            };
        }
        "healthy" => PackageHealth::Healthy,
        "unhealthy" => PackageHealth::UnhealthyV1,
        "unhealthy-v2" => PackageHealth::UnhealthyV2,
        "bump-generation" => {
            return match cp.bump_package_generation(kind, name) {
                Some(generation) => Done(format!("{generation}\n")),
                None => Refused(format!("no {} {name:?}", kind.kind())),
            }
        }
        _ => return Unknown,
    };
    if cp.set_package_health(kind, name, health) {
        done()
    } else {
        Refused(format!("no {} {name:?}", kind.kind()))
    }
}

fn managed_verb(cp: &SimControlPlane, plural: &str, rest: &[&str]) -> Outcome {
    let Some(kind) = ManagedKind::from_plural(plural) else {
        return Refused(format!(
            "unknown managed resource kind {plural:?}: serviceinstances, servicebindings, backups or restores"
        ));
    };
    let state = |word: Option<&&str>| {
        match word {
        None => Ok(ManagedState::Ready),
        Some(w) => ManagedState::from_word(w).ok_or_else(|| {
            format!("unknown state {w:?}: ready, failing, creating, deleting, paused, pending or unavailable")
        }),
    }
    };
    match rest {
        ["many", n, more @ ..] if more.len() <= 2 => {
            let Ok(n) = n.parse::<usize>() else {
                return Refused(format!("invalid count {n:?}: a whole number, e.g. 10000"));
            };
            match state(more.first()) {
                Ok(s) => Done(format!(
                    "{}\n",
                    cp.add_many_managed(kind, n, s, more.get(1).copied())
                )),
                Err(why) => Refused(why),
            }
        }
        [name, "remove"] => {
            if cp.remove_managed(kind, name) {
                done()
            } else {
                Refused(format!("no {} {name:?}", kind.kind()))
            }
        }
        [name, word] => match state(Some(word)) {
            Ok(s) if cp.set_managed(kind, name, s) => done(),
            Ok(_) => Refused(format!(
                "a pending operation is a ServiceInstance's alone, not a {}'s",
                kind.kind()
            )),
            Err(why) => Refused(why),
        },
        _ => Unknown,
    }
}

fn app_binding_verb(cp: &SimControlPlane, ns: &str, name: &str, verb: &str) -> Outcome {
    let found = match verb {
        "add" | "add-app-mode" => {
            cp.add_app_cluster_binding(ns, name, verb == "add");
            true
        }
        "konnector-missing" => cp.remove_app_konnector(ns, name),
        "konnector-back" => cp.restore_app_konnector(ns, name),
        state => match BindingState::from_word(state) {
            Some(state) => cp.set_app_cluster_binding(ns, name, state),
            None => return Unknown,
        },
    };
    if found {
        done()
    } else {
        Refused(format!(
            "no AppClusterBinding {ns}/{name} (or no konnector Deployment of it)"
        ))
    }
}

fn konnector_verb(cp: &SimControlPlane, ns: &str, rest: &[&str]) -> Outcome {
    let found = match rest {
        ["silence"] => cp.silence_konnector(ns, true),
        ["resume"] => cp.silence_konnector(ns, false),
        ["skew", secs] => match secs.parse() {
            Ok(secs) => cp.skew_konnector(ns, secs),
            Err(_) => {
                return Refused(format!(
                    "invalid offset {secs:?}: whole seconds, e.g. 120 or -120"
                ))
            }
        },
        _ => return Unknown,
    };
    if found {
        done()
    } else {
        Refused(format!("no app cluster is bound in namespace {ns:?}"))
    }
}
