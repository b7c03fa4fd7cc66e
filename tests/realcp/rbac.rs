//! The shipped RBAC, proven by the real authorizer: klutch-health as its ServiceAccount, with exactly what
//! `kubectl apply -k deploy` installs, syncs every shipped check, writes Events, holds the Lease and reloads
//! without one refused request; without any one rule it says what to grant, and recovers once it is back.

use klutch_realcp::{Identity, KLUTCH_HEALTH};

use crate::estate::{get, short, until, wait_for, Estate, NAMESPACE};

/// Every item of the shipped checks on the seeded estate.
pub const SHIPPED_ITEMS: [&str; 15] = [
    "backend-status/postgresql-service-broker",
    "backend-status/postgresql-backup-manager",
    "providers/provider-anynines",
    "providers/provider-kubernetes",
    "configurations/anynines-dataservices",
    "functions/function-patch-and-transform",
    "provider-configs/postgresql-service-broker",
    "provider-configs/postgresql-backup-manager",
    "anynines-backend/anynines-backend",
    "provider-pods/provider-anynines-3f2a9c1b7e5d-6b8f9c7d5-x2x7q",
    "konnectors/kube-bind-7xk2p",
    "konnectors/kube-bind-m4n8q",
    "konnectors/kube-bind-z9t3w",
    "app-cluster-bindings/team-a.prod",
    "app-cluster-bindings/team-b.dev",
];

const PC: &str = "postgresql-backup-manager";

/// `/readyz?verbose` passes with every shipped item `ok`.
pub fn all_ok(body: &str) -> bool {
    SHIPPED_ITEMS
        .iter()
        .all(|item| body.contains(&format!("[+]{item} ok\n")))
}

/// A whole run as `identity` with the shipped configuration `file`: every check syncs, the Lease is held, a
/// transition is written as an Event the real API accepts, a reload works, and not one request is refused.
pub async fn a_whole_run_without_a_403(estate: &mut Estate, file: &str, identity: Identity) {
    let svc = estate
        .klutch_health_with(file, identity, "klutch-health-0", None, |_| {})
        .await;
    let r = wait_for(&svc, "/readyz?verbose", "every shipped check synced", |r| {
        r.status == 200 && all_ok(&r.body)
    })
    .await;
    assert!(!r.body.contains("[-]"), "{}", r.body);

    // The Lease: created and held by this replica.
    let lease = until("the Events Lease", async || {
        get(
            &estate.admin,
            &format!(
                "/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/klutch-health-events"
            ),
        )
        .await
        .filter(|l| l["spec"]["holderIdentity"] == "klutch-health-0")
    })
    .await;
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 30, "{lease}");

    // A transition: an Event the real API accepted, regarding the ProviderConfig, in `default`.
    estate
        .sim
        .degrade_provider_config(PC, "backup manager unreachable");
    estate.mirror.caught_up().await.expect("mirrored");
    let r = wait_for(
        &svc,
        "/readyz?verbose",
        "the degraded ProviderConfig",
        |r| {
            r.body.contains(&format!(
                "[-]provider-configs/{PC} failed: backup manager unreachable"
            ))
        },
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.body);
    let event = until(
        "klutch-health's Event about the ProviderConfig",
        async || {
            let events = get(
                &estate.admin,
                "/apis/events.k8s.io/v1/namespaces/default/events",
            )
            .await?;
            events["items"]
                .as_array()?
                .iter()
                .find(|e| e["regarding"]["name"] == PC && e["reason"] == "CheckFailed")
                .cloned()
        },
    )
    .await;
    assert_eq!(event["reportingController"], "klutch-health", "{event}");
    assert_eq!(event["regarding"]["kind"], "ProviderConfig", "{event}");
    estate.sim.heal_provider_config(PC);
    estate.mirror.caught_up().await.expect("mirrored");
    wait_for(&svc, "/readyz?verbose", "the healed ProviderConfig", |r| {
        r.status == 200 && all_ok(&r.body)
    })
    .await;

    // A reload: the file changes, the new description is served.
    let path = svc.dir.path().join("config.toml");
    let config = std::fs::read_to_string(&path).expect("config");
    std::fs::write(
        &path,
        config.replace(
            "description = \"Klutch control plane\"",
            "description = \"reloaded\"",
        ),
    )
    .expect("write config");
    wait_for(
        &svc,
        "/readyz?format=json",
        "the reloaded description",
        |r| r.json()["description"] == "reloaded",
    )
    .await;

    // The whole run: not one request refused, by the server's audit log and by klutch-health's logs.
    assert!(
        estate
            .cp
            .audit_events()
            .iter()
            .any(|e| e["user"]["username"] == identity.user()),
        "the audit log records klutch-health's requests"
    );
    assert_eq!(estate.refused(), Vec::<String>::new());
    let logs = svc.logs();
    let refusals: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("orbidden") || l.contains(" 403"))
        .collect();
    assert!(refusals.is_empty(), "{refusals:#?}");
}

#[tokio::test]
async fn the_shipped_rbac_syncs_every_check_writes_events_holds_the_lease_and_reloads_without_a_403(
) {
    let mut estate = Estate::shared().await;
    a_whole_run_without_a_403(&mut estate, "config.toml", KLUTCH_HEALTH).await;
}

/// One rule of the rendered RBAC: the Role or ClusterRole, its namespace, and the rule's index and body.
#[derive(Debug, Clone)]
struct Rule {
    kind: String,
    name: String,
    namespace: Option<String>,
    index: usize,
    rule: serde_json::Value,
}

impl Rule {
    fn resources(&self) -> Vec<&str> {
        self.rule["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
            .collect()
    }

    fn target(&self) -> Vec<String> {
        let mut args = vec![format!("{}/{}", self.kind.to_lowercase(), self.name)];
        if let Some(ns) = &self.namespace {
            args.extend(["-n".to_string(), ns.clone()]);
        }
        args
    }
}

/// Every rule of every Role and ClusterRole that `kubectl kustomize DIR` renders.
async fn rendered_rules(estate: &Estate, dir: &str) -> Vec<Rule> {
    let rendered = estate
        .cp
        .kubectl(&["kustomize", dir], None)
        .await
        .expect("kubectl kustomize");
    let mut rules = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&rendered) {
        let obj: serde_json::Value = serde::Deserialize::deserialize(doc).expect("rendered YAML");
        let kind = obj["kind"].as_str().unwrap_or_default();
        if kind != "Role" && kind != "ClusterRole" {
            continue;
        }
        for (index, rule) in obj["rules"].as_array().into_iter().flatten().enumerate() {
            rules.push(Rule {
                kind: kind.to_string(),
                name: obj["metadata"]["name"].as_str().unwrap_or_default().into(),
                namespace: obj["metadata"]["namespace"].as_str().map(str::to_string),
                index,
                rule: rule.clone(),
            });
        }
    }
    rules
}

/// What klutch-health says without `rule`, and where: watched resources on `/readyz?verbose` (their first
/// request, a LIST, is refused), Events and the Lease in the log (the first request they make is refused).
fn expected_words(rule: &Rule) -> (&'static str, String) {
    let group = rule.rule["apiGroups"][0].as_str().unwrap_or_default();
    let resource = rule.resources()[0];
    let verbs: Vec<&str> = rule.rule["verbs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .collect();
    let verb = if verbs.contains(&"list") {
        "list"
    } else {
        verbs[0]
    };
    let group = if group.is_empty() {
        "the core API group".to_string()
    } else {
        format!("API group \"{group}\"")
    };
    let scope = match &rule.namespace {
        Some(ns) => format!("in namespace {ns} (a Role)"),
        None => "cluster-wide (a ClusterRole)".into(),
    };
    // An Event is refused in the namespace it goes to, whatever kind of role would grant it there.
    let scope = if resource == "events" {
        "in namespace ".to_string()
    } else {
        scope
    };
    let words = format!("grant the verb \"{verb}\" on \"{resource}\" in {group} {scope}");
    let place = if matches!(resource, "events" | "leases") {
        "log"
    } else {
        "readyz"
    };
    (place, words)
}

/// Whether a JSON log line says `words` in one of its fields.
fn logged(line: &str, words: &str) -> bool {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(line) else {
        return false;
    };
    fields
        .values()
        .any(|v| v.as_str().is_some_and(|s| s.contains(words)))
}

#[tokio::test]
async fn without_any_one_rule_klutch_health_says_what_to_grant_and_recovers_once_it_is_back() {
    let mut estate = Estate::own().await;
    let rules = rendered_rules(&estate, "deploy").await;
    assert!(rules.len() >= 8, "{rules:#?}");
    let lease =
        format!("/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/klutch-health-events");
    for (n, rule) in rules.iter().enumerate() {
        let mut patch_args: Vec<String> = vec!["patch".into()];
        patch_args.extend(rule.target());
        patch_args.extend([
            "--type=json".into(),
            format!(
                "-p=[{{\"op\":\"remove\",\"path\":\"/rules/{}\"}}]",
                rule.index
            ),
        ]);
        let args: Vec<&str> = patch_args.iter().map(String::as_str).collect();
        estate
            .cp
            .kubectl(&args, None)
            .await
            .expect("remove the rule");
        // A fresh replica: it lists everything anew and takes the Lease anew.
        let _ = estate.admin.delete(&lease, None).await;
        let svc = estate
            .klutch_health(KLUTCH_HEALTH, &format!("klutch-health-{n}"), None, short)
            .await;
        let (where_, words) = expected_words(rule);
        let what = format!("without {rule:?}: {words}");
        if rule.resources() == ["events"] {
            // Events are written on a transition after start-up: one in every namespace they go to.
            wait_for(&svc, "/readyz?verbose", "the initial sync", |r| {
                all_ok(&r.body)
            })
            .await;
            estate
                .sim
                .degrade_provider_config(PC, "backup manager unreachable");
            estate
                .sim
                .set_deployment_available("bind", "anynines-backend", false);
            estate.mirror.caught_up().await.expect("mirrored");
        }
        if where_ == "readyz" {
            wait_for(&svc, "/readyz?verbose", &what, |r| r.body.contains(&words)).await;
        } else {
            until(&what, async || {
                svc.logs().into_iter().find(|l| logged(l, &words))
            })
            .await;
        }
        // Back: the same process recovers without a restart.
        estate
            .cp
            .kubectl(&["apply", "-k", "deploy"], None)
            .await
            .expect("restore the RBAC");
        estate.sim.heal_provider_config(PC);
        estate
            .sim
            .set_deployment_available("bind", "anynines-backend", true);
        estate.mirror.caught_up().await.expect("mirrored");
        wait_for(
            &svc,
            "/readyz?verbose",
            &format!("recovery after {rule:?}"),
            |r| r.status == 200 && all_ok(&r.body),
        )
        .await;
        until(
            &format!("the Lease held again after {rule:?}"),
            async || {
                get(&estate.admin, &lease)
                    .await
                    .filter(|l| l["spec"]["holderIdentity"] == format!("klutch-health-{n}"))
            },
        )
        .await;
    }
}
