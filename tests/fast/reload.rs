//! Operating the running process: reload by SIGHUP and by a ConfigMap-style `..data` symlink swap, a refused
//! invalid configuration, restart-only keys, watches kept across a reload, a rotated token, and silences and
//! maintenance windows that end by themselves — all through the real binary.

use crate::common;

use common::{backend_config, eventually, full_config, kubeconfig, Service};
use klutch_sim::{FakeBackend, SimControlPlane};

#[tokio::test]
async fn sighup_applies_a_new_config_and_keeps_the_watches_of_unchanged_checks() {
    let cp = SimControlPlane::start()
        .await
        .expect("simulated control plane");
    let dir = tempfile::tempdir().expect("dir");
    let kc = kubeconfig(&cp.api, dir.path());
    let config = full_config(&cp.backend.url(), "");
    let svc = Service::start(&config, &[("KUBECONFIG", &kc)]).await;
    svc.wait_for("/readyz?verbose", "the initial sync", |r| {
        r.status == 200 && r.body.contains("[+]provider-pods/")
    })
    .await;
    let loaded = svc
        .metric("klutch_health_config_last_reload_success_timestamp_seconds")
        .await
        .expect("reload timestamp exported");

    // Remove provider-pods, add a check with a watch of its own, change a restart-only key.
    let mut doc: toml::Table = config.parse().expect("TOML");
    let checks = doc["check"].as_array_mut().expect("checks");
    checks.retain(|c| c["name"].as_str() != Some("provider-pods"));
    checks.push(toml::Value::Table(
        "name = \"system-deployment\"\ntype = \"deployment\"\nnamespace = \"crossplane-system\"\ndeployment = \"other\"\n"
            .parse()
            .expect("TOML"),
    ));
    doc["server"]
        .as_table_mut()
        .expect("[server]")
        .insert("max_connections".into(), 7.into());
    doc["server"]
        .as_table_mut()
        .expect("[server]")
        .insert("description".into(), "Reloaded plane".into());
    cp.api.reset_requests();
    std::fs::write(
        svc.dir.path().join("config.toml"),
        toml::to_string(&doc).expect("TOML"),
    )
    .expect("write config");
    common::signal("HUP", svc.pid());

    let r = svc
        .wait_for("/readyz?verbose", "the reloaded checks", |r| {
            r.body.contains("system-deployment/") && !r.body.contains("provider-pods/")
        })
        .await;
    assert!(
        r.body.contains("[+]providers/provider-anynines ok"),
        "{}",
        r.body
    );
    let lists = |path: &str| {
        cp.api
            .requests()
            .iter()
            .filter(|q| q.lists() && q.path.contains(path))
            .count()
    };
    eventually("the added check to list its deployments", async || {
        (lists("/namespaces/crossplane-system/deployments") > 0).then_some(())
    })
    .await;
    for unchanged in [
        "/providers",
        "/providerconfigs",
        "/namespaces/bind/deployments",
    ] {
        assert_eq!(
            lists(unchanged),
            0,
            "{unchanged} relisted: {:?}",
            cp.api.requests()
        );
    }
    assert_eq!(
        svc.get("/livez").await.status,
        200,
        "SIGHUP no longer ends the process"
    );
    let json = svc.get("/readyz?format=json").await.json();
    assert_eq!(json["description"], "Reloaded plane", "{json}");
    assert!(svc.get("/").await.body.contains("<h1>Reloaded plane</h1>"));
    // The file poll may have applied the change first; SIGHUP reloads all the same.
    eventually("the reload by SIGHUP", async || {
        svc.logged("configuration reloaded")
            .iter()
            .any(|l| l["trigger"] == "SIGHUP")
            .then_some(())
    })
    .await;
    let warned = svc.logged("server.max_connections changed");
    assert_eq!(
        warned.len(),
        1,
        "once, however often it reloads: {:?}",
        svc.logs()
    );
    assert!(
        svc.logged("provider-pods/_pending").is_empty(),
        "a removed check never shows as pending in between: {:?}",
        svc.logs()
    );
    assert_eq!(warned[0]["level"], "WARN");
    assert_eq!(
        svc.metric("klutch_health_config_last_reload_successful")
            .await,
        Some(1.0)
    );
    let reloaded = svc
        .metric("klutch_health_config_last_reload_success_timestamp_seconds")
        .await
        .expect("timestamp");
    assert!(reloaded >= loaded, "{reloaded} < {loaded}");
    std::mem::forget(dir);
}

#[tokio::test]
async fn a_silence_keeps_a_failure_from_failing_readyz_until_the_instant_it_ends() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("postgresql-backup-manager", "degraded");
    let until = common::in_secs(3);
    // One poll an hour: nothing but the engine's own timer can end the silence within the test.
    let config = format!(
        "[[check]]\nname = \"backend-status\"\ntype = \"backend-status\"\nurl = \"{}\"\ninterval = \"1h\"\n\
         [[silence]]\nmatch = \"backend-status/postgresql-backup-manager\"\nuntil = \"{until}\"\n\
         reason = \"retiring it (OPS-123)\"\n",
        backend.url()
    );
    let svc = Service::start(&config, &[]).await;
    let r = svc
        .wait_for("/readyz?verbose", "the silenced item", |r| {
            r.body.contains("silenced until")
        })
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains(&format!(
            "[+]backend-status/postgresql-backup-manager warn: silenced until {until} (retiring it (OPS-123)): "
        )),
        "{}",
        r.body
    );
    let json = svc.get("/readyz?format=json").await.json();
    let item = &json["checks"]["backend-status"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["componentId"] == "postgresql-backup-manager")
        .expect("item")
        .clone();
    assert_eq!(item["silenced"]["reason"], "retiring it (OPS-123)");
    assert_eq!(
        svc.metric("klutch_health_silenced_items{endpoint=\"readyz\"}")
            .await,
        Some(1.0)
    );
    assert!(svc.get("/").await.body.contains("in force"));
    // No reload, no new observation: the engine's timer ends it.
    let polls = backend.request_count();
    let r = svc
        .wait_for("/readyz?verbose", "the silence to end", |r| r.status == 503)
        .await;
    assert!(
        r.body
            .contains("[-]backend-status/postgresql-backup-manager failed"),
        "{}",
        r.body
    );
    assert_eq!(backend.request_count(), polls, "no poll in between");
    assert!(svc.get("/").await.body.contains("(expired)"));
}

#[tokio::test]
async fn a_rotated_token_file_is_read_again() {
    let backend = FakeBackend::start().await.expect("fake backend");
    backend.set_entry("postgresql-backup-manager", "degraded");
    let token_dir = tempfile::tempdir().expect("dir");
    let token = token_dir.path().join("token");
    std::fs::write(&token, "first\n").expect("token");
    let config = backend_config(
        &backend.url(),
        &format!(
            "[server]\ndetails = \"token\"\ntoken_file = \"{}\"\n",
            token.display()
        ),
    );
    let svc = Service::start(&config, &[]).await;
    let shown = |r: &common::Resp| r.body.contains("degraded");
    let r = svc
        .wait_for("/readyz?verbose", "the failure", |r| r.status == 503)
        .await;
    assert!(!shown(&r), "no token, no details: {}", r.body);
    assert!(shown(&with_token(&svc, "first").await));
    std::fs::write(&token, "second\n").expect("rotate");
    eventually("the rotated token", async || {
        shown(&with_token(&svc, "second").await).then_some(())
    })
    .await;
    assert!(
        !shown(&with_token(&svc, "first").await),
        "the old token no longer works"
    );
}

async fn with_token(svc: &Service, token: &str) -> common::Resp {
    svc.get_with(
        "/readyz?verbose",
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await
}

/// Every kind of change that gives a check new watches (a cluster's settings, a namespace, a cluster, the
/// Events switch) and its revert: after each reload every Kubernetes check syncs again. A restarted check
/// once lost its new subscription, so the watch it had just started was stopped and it waited forever.
#[tokio::test]
async fn a_reload_that_changes_watches_leaves_every_check_synced() {
    let cp = SimControlPlane::start()
        .await
        .expect("simulated control plane");
    let dir = tempfile::tempdir().expect("dir");
    let kc = kubeconfig(&cp.api, dir.path());
    let shipped = full_config(&cp.backend.url(), "");
    let svc = Service::start(&shipped, &[("KUBECONFIG", &kc)]).await;
    let synced = |r: &common::Resp| !r.body.contains("waiting for initial sync");
    svc.wait_for("/readyz?verbose", "the initial sync", |r| {
        r.status == 200 && synced(r)
    })
    .await;

    let edit = |change: &dyn Fn(&mut toml::Table)| {
        let mut doc: toml::Table = shipped.parse().expect("TOML");
        change(&mut doc);
        toml::to_string(&doc).expect("TOML")
    };
    let check = |doc: &mut toml::Table, name: &str, key: &str, value: toml::Value| {
        let checks = doc["check"].as_array_mut().expect("checks");
        let table = checks
            .iter_mut()
            .filter_map(toml::Value::as_table_mut)
            .find(|c| c["name"].as_str() == Some(name))
            .expect("the check");
        table.insert(key.into(), value);
    };
    let kubernetes = |doc: &mut toml::Table, key: &str, value: toml::Value| {
        doc["kubernetes"]
            .as_table_mut()
            .expect("[kubernetes]")
            .insert(key.into(), value);
    };
    let changes: Vec<(&str, String)> = vec![
        (
            "stale_after 60s -> 61s",
            edit(&|d| kubernetes(d, "stale_after", "61s".into())),
        ),
        ("stale_after back", shipped.clone()),
        (
            "a deployment check moved to another namespace",
            edit(&|d| {
                check(
                    d,
                    "anynines-backend",
                    "namespace",
                    "crossplane-system".into(),
                )
            }),
        ),
        ("the namespace back", shipped.clone()),
        (
            "a check moved to another cluster",
            edit(&|d| {
                let mut app = toml::Table::new();
                app.insert("kubeconfig".into(), kc.clone().into());
                let mut clusters = toml::Table::new();
                clusters.insert("app".into(), app.into());
                d.insert("clusters".into(), clusters.into());
                check(d, "provider-pods", "cluster", "app".into());
            }),
        ),
        ("the cluster back", shipped.clone()),
        (
            "Events off",
            edit(&|d| kubernetes(d, "events", false.into())),
        ),
        ("Events on again", shipped.clone()),
    ];
    for (what, config) in &changes {
        // The file poll may apply a change before SIGHUP does: the first reload after the write is this one.
        let before = svc.logged("configuration reloaded").len();
        std::fs::write(svc.dir.path().join("config.toml"), config).expect("write config");
        common::signal("HUP", svc.pid());
        svc.reloads(before + 1).await;
        let r = svc
            .wait_for(
                "/readyz?verbose",
                &format!("every check synced after: {what}"),
                synced,
            )
            .await;
        // A namespace without the deployment fails its check; every other change keeps the estate green.
        if !what.contains("another namespace") {
            svc.wait_for("/readyz?verbose", &format!("green after: {what}"), |r| {
                r.status == 200
            })
            .await;
        } else {
            assert!(r.body.contains("anynines-backend/"), "{}", r.body);
        }
    }
    assert_eq!(
        svc.metric("klutch_health_config_last_reload_successful")
            .await,
        Some(1.0)
    );
    std::mem::forget(dir);
}

/// A reload that turns `[kubernetes] events` on is applied (a Lease taken, Events written), and the Events
/// of a check it adds on another cluster regard klutch-health's own Pod: that cluster's Deployment is not in
/// the cluster the Events go to (the set of such checks was once fixed at start-up).
#[tokio::test]
async fn a_reload_applies_events_and_names_the_right_cluster_for_a_check_it_adds() {
    let cp = SimControlPlane::start()
        .await
        .expect("simulated control plane");
    let dir = tempfile::tempdir().expect("dir");
    let kc = kubeconfig(&cp.api, dir.path());
    let shipped = full_config(&cp.backend.url(), "");
    let mut doc: toml::Table = shipped.parse().expect("TOML");
    doc["kubernetes"]
        .as_table_mut()
        .expect("[kubernetes]")
        .insert("events".into(), false.into());
    let off = toml::to_string(&doc).expect("TOML");
    let env = [
        ("KUBECONFIG", kc.as_str()),
        ("POD_NAME", "klutch-health-r"),
        ("POD_NAMESPACE", "klutch-system"),
    ];
    let svc = Service::start(&off, &env).await;
    svc.wait_for("/readyz", "the initial sync", |r| r.status == 200)
        .await;
    let events = || cp.api.list("events.k8s.io/v1", "Event");
    cp.set_deployment_available("bind", "anynines-backend", false);
    svc.wait_for("/readyz", "the backend down", |r| r.status == 503)
        .await;
    cp.set_deployment_available("bind", "anynines-backend", true);
    svc.wait_for("/readyz", "the backend back", |r| r.status == 200)
        .await;
    assert!(events().is_empty(), "events = false: {:?}", events());

    // Events on (the shipped default), and a check of the same Deployment through another cluster.
    let mut app = toml::Table::new();
    app.insert("kubeconfig".into(), kc.clone().into());
    doc.insert(
        "clusters".into(),
        toml::Table::from_iter([("app".to_string(), app.into())]).into(),
    );
    doc["kubernetes"]
        .as_table_mut()
        .expect("[kubernetes]")
        .insert("events".into(), true.into());
    doc["check"].as_array_mut().expect("checks").push(
        "name = \"app-backend\"\ntype = \"deployment\"\ncluster = \"app\"\nnamespace = \"bind\"\ndeployment = \"anynines-backend\"\n"
            .parse::<toml::Table>()
            .expect("TOML")
            .into(),
    );
    let before = svc.logged("configuration reloaded").len();
    std::fs::write(
        svc.dir.path().join("config.toml"),
        toml::to_string(&doc).expect("TOML"),
    )
    .expect("write config");
    common::signal("HUP", svc.pid());
    svc.reloads(before + 1).await;
    eventually("the Events Lease taken after the reload", async || {
        cp.api
            .get(
                "coordination.k8s.io/v1",
                "Lease",
                Some("klutch-system"),
                "klutch-health-events",
            )
            .map(|_| ())
    })
    .await;
    svc.wait_for("/readyz?verbose", "the added check synced", |r| {
        r.status == 200 && r.body.contains("[+]app-backend/anynines-backend ok")
    })
    .await;

    cp.set_deployment_available("bind", "anynines-backend", false);
    let warning = |check: &'static str| {
        let events = &events;
        async move {
            eventually(&format!("a Warning Event of {check}"), async || {
                events().into_iter().find(|e| {
                    e["type"] == "Warning"
                        && e["note"]
                            .as_str()
                            .is_some_and(|n| n.starts_with(&format!("{check}/")))
                })
            })
            .await
        }
    };
    let here = warning("anynines-backend").await;
    assert_eq!(
        (&here["regarding"]["kind"], &here["regarding"]["namespace"]),
        (&"Deployment".into(), &"bind".into()),
        "{here}"
    );
    let there = warning("app-backend").await;
    assert_eq!(
        (&there["regarding"]["kind"], &there["regarding"]["name"]),
        (&"Pod".into(), &"klutch-health-r".into()),
        "{there}"
    );
    std::mem::forget(dir);
}

/// An app cluster's kubeconfig fixed in place (same file, new content) is picked up without a restart: its
/// change is noticed like the configuration file's, and the cluster gets a new connection. Once read, a
/// kubeconfig used to stay in force for the life of the process.
#[tokio::test]
async fn a_kubeconfig_fixed_in_place_is_picked_up() {
    let cp = SimControlPlane::start()
        .await
        .expect("simulated control plane");
    let dir = tempfile::tempdir().expect("dir");
    let kc = kubeconfig(&cp.api, dir.path());
    let good = std::fs::read_to_string(&kc).expect("kubeconfig");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let app = dir.path().join("app.kubeconfig");
    let url = cp.api.url();
    assert!(good.contains(&url), "{good}");
    std::fs::write(
        &app,
        good.replace(&url, &format!("http://127.0.0.1:{closed}")),
    )
    .expect("write");
    let config = full_config(
        &cp.backend.url(),
        &format!(
            "[clusters.app]\nkubeconfig = \"{}\"\n\
             [[check]]\nname = \"app-backend\"\ntype = \"deployment\"\ncluster = \"app\"\nnamespace = \"bind\"\ndeployment = \"anynines-backend\"\n",
            app.display()
        ),
    );
    let svc = Service::start(&config, &[("KUBECONFIG", &kc)]).await;
    let r = svc
        .wait_for("/readyz?verbose", "the app cluster unreachable", |r| {
            r.body.contains("[-]app-backend/") && r.body.contains("[+]providers/")
        })
        .await;
    assert!(!r.body.contains("[+]app-backend/"), "{}", r.body);

    std::fs::write(&app, &good).expect("fix the kubeconfig in place");
    common::signal("HUP", svc.pid());
    svc.wait_for("/readyz?verbose", "the fixed kubeconfig picked up", |r| {
        r.body.contains("[+]app-backend/anynines-backend ok")
    })
    .await;
    std::mem::forget(dir);
}

/// `/readyz?verbose` asked every 20 ms from now on.
fn poll_readyz(addr: std::net::SocketAddr) -> common::Poller {
    common::Poller::start(
        addr,
        "/readyz?verbose",
        std::time::Duration::from_millis(20),
    )
}

/// A reload that changes only how held objects are judged (a threshold, an `ignore` glob, a timeout, a poll's
/// timeout) re-judges what is held: no LIST, no `unknown`, no 503 in between; and one that changes what a
/// check watches keeps answering from what it held until the new watch has listed.
#[tokio::test]
async fn a_reload_that_changes_how_objects_are_judged_lists_nothing_and_never_fails_readyz() {
    let cp = SimControlPlane::start()
        .await
        .expect("simulated control plane");
    let dir = tempfile::tempdir().expect("dir");
    let kc = kubeconfig(&cp.api, dir.path());
    let shipped = full_config(&cp.backend.url(), "");
    let svc = Service::start(&shipped, &[("KUBECONFIG", &kc)]).await;
    svc.wait_for("/readyz?verbose", "the initial sync", |r| {
        r.status == 200 && !r.body.contains("waiting for initial sync")
    })
    .await;
    let set = |doc: &mut toml::Table, name: &str, key: &str, value: toml::Value| {
        let checks = doc["check"].as_array_mut().expect("checks");
        checks
            .iter_mut()
            .filter_map(toml::Value::as_table_mut)
            .find(|c| c["name"].as_str() == Some(name))
            .expect("the check")
            .insert(key.into(), value);
    };
    let mut doc: toml::Table = shipped.parse().expect("TOML");
    let mut judging: Vec<String> = Vec::new();
    for (check, key, value) in [
        ("managed-resources", "fail_share", toml::Value::from("29%")),
        (
            "managed-resources",
            "ignore",
            toml::Value::Array(vec!["test-*".into()]),
        ),
        ("managed-resources", "create_timeout", "2h".into()),
        ("managed-resources", "fail_min", 5.into()),
        ("backend-status", "timeout", "400ms".into()),
    ] {
        set(&mut doc, check, key, value);
        judging.push(toml::to_string(&doc).expect("TOML"));
    }
    let managed_lists = || {
        cp.api
            .requests()
            .iter()
            .filter(|q| q.lists() && q.path.contains("dataservices.anynines.com"))
            .count()
    };

    let poller = poll_readyz(svc.addr);
    let logs_before = svc.logs().len();
    cp.api.reset_requests();
    let mut reloads = svc.logged("configuration reloaded").len();
    for config in &judging {
        std::fs::write(svc.dir.path().join("config.toml"), config).expect("write config");
        common::signal("HUP", svc.pid());
        reloads += 1;
        svc.reloads(reloads).await;
        // A poll or two after each reload, so that any `unknown` in between would be seen.
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    assert_eq!(
        managed_lists(),
        0,
        "a judging change lists nothing again: {:?}",
        cp.api.requests()
    );
    let r = svc.get("/readyz?verbose").await;
    assert!(
        r.body.contains("[+]managed-resources/serviceinstances"),
        "{}",
        r.body
    );

    // What a check watches changes (a kind added, a deployment check's namespace): the new watches list
    // while the items held stand in.
    let mut moved = doc.clone();
    set(
        &mut moved,
        "managed-resources",
        "resources",
        toml::Value::Array(vec!["serviceinstances".into(), "backups".into()]),
    );
    let mut back = moved.clone();
    set(
        &mut back,
        "managed-resources",
        "resources",
        toml::Value::Array(
            ["serviceinstances", "servicebindings", "backups", "restores"]
                .into_iter()
                .map(toml::Value::from)
                .collect(),
        ),
    );
    set(&mut back, "managed-resources", "max_objects", 40000.into());
    for config in [&moved, &back] {
        std::fs::write(
            svc.dir.path().join("config.toml"),
            toml::to_string(config).expect("TOML"),
        )
        .expect("write config");
        common::signal("HUP", svc.pid());
        reloads += 1;
        svc.reloads(reloads).await;
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    common::all_200(&poller.stop().await, "the reloads");
    let unknown: Vec<_> = svc.logs()[logs_before..]
        .iter()
        .filter(|l| l.contains("-> unknown"))
        .cloned()
        .collect();
    assert!(unknown.is_empty(), "an item turned unknown: {unknown:?}");
    svc.wait_for("/readyz?verbose", "every kind again", |r| {
        r.status == 200 && r.body.contains("[+]managed-resources/restores")
    })
    .await;
    std::mem::forget(dir);
}

/// A kubeconfig rewritten with a comment, its keys in another order and a new inline token for the same
/// identity (what a token refresher does) restarts nothing: no LIST, no 503, and the next requests carry
/// the new token. Another server makes a new connection.
#[tokio::test]
async fn a_rewritten_kubeconfig_with_a_new_token_restarts_nothing_and_the_new_token_is_used() {
    let cp = SimControlPlane::start()
        .await
        .expect("simulated control plane");
    let dir = tempfile::tempdir().expect("dir");
    let kc = kubeconfig(&cp.api, dir.path());
    let shipped = full_config(&cp.backend.url(), "");
    let mut doc: toml::Table = shipped.parse().expect("TOML");
    doc["kubernetes"]
        .as_table_mut()
        .expect("[kubernetes]")
        .insert("kubeconfig".into(), kc.clone().into());
    doc["kubernetes"]
        .as_table_mut()
        .expect("[kubernetes]")
        .insert("probe_interval".into(), "1s".into());
    let svc = Service::start(&toml::to_string(&doc).expect("TOML"), &[]).await;
    svc.wait_for("/readyz?verbose", "the initial sync", |r| {
        r.status == 200 && !r.body.contains("waiting for initial sync")
    })
    .await;
    let poller = poll_readyz(svc.addr);
    cp.api.reset_requests();
    let reloads = svc.logged("configuration reloaded").len();
    let rewritten = format!(
        "# refreshed\ncurrent-context: fake\nusers:\n- user:\n    token: rotated-token\n  name: fake\n\
         kind: Config\napiVersion: v1\nclusters:\n- cluster:\n    server: {}\n  name: fake\n\
         contexts:\n- context:\n    namespace: default\n    user: fake\n    cluster: fake\n  name: fake\n",
        cp.api.url()
    );
    std::fs::write(&kc, rewritten).expect("rewrite the kubeconfig");
    common::signal("HUP", svc.pid());
    svc.reloads(reloads + 1).await;
    // A change after the rewrite is seen (the watches go on), and the requests after it carry the new token.
    eventually("a request with the new token", async || {
        let _ = svc.get("/readyz").await;
        cp.api
            .requests()
            .iter()
            .any(|q| q.authorization.as_deref() == Some("Bearer rotated-token"))
            .then_some(())
    })
    .await;
    common::all_200(&poller.stop().await, "the kubeconfig rewrite");
    let lists: Vec<_> = cp
        .api
        .requests()
        .into_iter()
        .filter(|q| q.lists() && (q.is_watch || q.query.contains("limit=")))
        .collect();
    assert!(lists.is_empty(), "relisted: {lists:?}");
    assert!(
        svc.logged("every watch goes on").len() == 1,
        "{:?}",
        svc.logs()
    );
    std::mem::forget(dir);
}
