//! The Consul double against the shapes Consul documents for the endpoints it implements.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use flow_consul_double::{CheckStatus, ConsulDouble};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{json, Value};

struct Api {
    double: ConsulDouble,
    client: Client,
}

impl Api {
    async fn start() -> Api {
        Api {
            double: ConsulDouble::start().await.expect("the double starts"),
            client: Client::new(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Response {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.double.address()));
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        request.send().await.expect("the double answers")
    }

    async fn json(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let response = self.call(method, path, body).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().await.expect("a JSON answer")
    }

    async fn put_kv(&self, path: &str, value: &str) -> String {
        let response = self
            .client
            .put(format!("{}/v1/kv/{path}", self.double.address()))
            .body(value.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.unwrap()
    }
}

fn index_of(response: &Response) -> u64 {
    response.headers()["X-Consul-Index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn kv_reads_and_writes_have_consuls_shapes() {
    let api = Api::start().await;
    let missing = api.call(Method::GET, "/v1/kv/a/b", None).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.text().await.unwrap(), "", "404 has an empty body");

    assert_eq!(api.put_kv("a/b", "hello").await, "true");
    let response = api.call(Method::GET, "/v1/kv/a/b", None).await;
    let first_index = index_of(&response);
    let entries: Value = response.json().await.unwrap();
    let entry = &entries[0];
    assert_eq!(entry["Key"], "a/b");
    assert_eq!(entry["Value"], BASE64.encode("hello"));
    assert_eq!(entry["Flags"], 0);
    assert_eq!(entry["LockIndex"], 0);
    assert!(entry["CreateIndex"].as_u64().unwrap() > 0);
    assert_eq!(entry["CreateIndex"], entry["ModifyIndex"]);
    assert!(entry.get("Session").is_none());
    let modify_index = entry["ModifyIndex"].as_u64().unwrap();

    let raw = api.call(Method::GET, "/v1/kv/a/b?raw", None).await;
    assert_eq!(raw.text().await.unwrap(), "hello");

    assert_eq!(api.put_kv("a/c/d", "x").await, "true");
    let tree = api.json(Method::GET, "/v1/kv/a/?recurse", None).await;
    let keys: Vec<&str> = tree
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["a/b", "a/c/d"]);
    let names = api
        .json(Method::GET, "/v1/kv/a/?keys&separator=/", None)
        .await;
    assert_eq!(names, json!(["a/b", "a/c/"]));

    // cas=0 creates only; cas=<ModifyIndex> writes once; a stale index writes nothing.
    assert_eq!(api.put_kv("a/b?cas=0", "nope").await, "false");
    assert_eq!(api.put_kv("a/new?cas=0", "created").await, "true");
    assert_eq!(
        api.put_kv(&format!("a/b?cas={modify_index}"), "v2").await,
        "true"
    );
    assert_eq!(
        api.put_kv(&format!("a/b?cas={modify_index}"), "v3").await,
        "false"
    );
    let response = api.call(Method::GET, "/v1/kv/a/b?raw", None).await;
    assert!(
        index_of(&response) > first_index,
        "every write moves the index"
    );
    assert_eq!(response.text().await.unwrap(), "v2");

    let deleted = api.call(Method::DELETE, "/v1/kv/a/b", None).await;
    assert_eq!(deleted.text().await.unwrap(), "true");
    assert_eq!(
        api.call(Method::GET, "/v1/kv/a/b", None).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn transactions_apply_all_or_nothing() {
    let api = Api::start().await;
    let ok = api
        .json(
            Method::PUT,
            "/v1/txn",
            Some(json!([
                {"KV": {"Verb": "cas", "Key": "t/rev", "Value": BASE64.encode("r"), "Index": 0}},
                {"KV": {"Verb": "set", "Key": "t/a", "Value": BASE64.encode("1")}},
                {"KV": {"Verb": "delete", "Key": "t/gone"}},
            ])),
        )
        .await;
    assert_eq!(ok["Errors"], Value::Null);
    let results = ok["Results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "deletes report nothing: {ok}");
    assert_eq!(results[0]["KV"]["Key"], "t/rev");
    assert_eq!(results[0]["KV"]["Value"], Value::Null);
    assert_eq!(
        results[0]["KV"]["ModifyIndex"], results[1]["KV"]["ModifyIndex"],
        "one transaction, one index"
    );

    let failed = api
        .call(
            Method::PUT,
            "/v1/txn",
            Some(json!([
                {"KV": {"Verb": "set", "Key": "t/a", "Value": BASE64.encode("2")}},
                {"KV": {"Verb": "cas", "Key": "t/rev", "Value": BASE64.encode("r"), "Index": 0}},
            ])),
        )
        .await;
    assert_eq!(failed.status(), StatusCode::CONFLICT);
    let failed: Value = failed.json().await.unwrap();
    assert_eq!(failed["Results"], Value::Null);
    assert_eq!(failed["Errors"][0]["OpIndex"], 1);
    assert!(failed["Errors"][0]["What"].is_string());
    let a = api.call(Method::GET, "/v1/kv/t/a?raw", None).await;
    assert_eq!(
        a.text().await.unwrap(),
        "1",
        "a rolled-back transaction writes nothing"
    );
}

#[tokio::test]
async fn sessions_hold_locks_and_expire() {
    let api = Api::start().await;
    let too_short = api
        .call(
            Method::PUT,
            "/v1/session/create",
            Some(json!({"TTL": "5s"})),
        )
        .await;
    // Consul refuses it in the server's Session.Apply, whose errors are 500s.
    assert_eq!(too_short.status(), StatusCode::INTERNAL_SERVER_ERROR);

    let create = |behavior: &'static str| {
        let api = &api;
        async move {
            api.json(
                Method::PUT,
                "/v1/session/create",
                Some(json!({"Name": "t", "TTL": "10s", "Behavior": behavior, "LockDelay": "0s"})),
            )
            .await["ID"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let holder = create("delete").await;
    let other = create("release").await;
    assert_eq!(
        api.put_kv(&format!("l/k?acquire={holder}"), "a").await,
        "true"
    );
    assert_eq!(
        api.put_kv(&format!("l/k?acquire={other}"), "b").await,
        "false"
    );
    let entry = &api.json(Method::GET, "/v1/kv/l/k", None).await[0];
    assert_eq!(entry["Session"], holder.as_str());
    assert_eq!(entry["LockIndex"], 1);
    assert_eq!(
        api.put_kv(&format!("l/k?release={other}"), "").await,
        "false"
    );

    let renewed = api
        .json(Method::PUT, &format!("/v1/session/renew/{holder}"), None)
        .await;
    assert_eq!(renewed[0]["ID"], holder.as_str());
    assert_eq!(renewed[0]["Behavior"], "delete");
    let unknown = api
        .call(Method::PUT, "/v1/session/renew/no-such-session", None)
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    // Behavior=delete: destroying the session deletes the key it held.
    api.json(Method::PUT, &format!("/v1/session/destroy/{holder}"), None)
        .await;
    assert_eq!(
        api.call(Method::GET, "/v1/kv/l/k", None).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.json(Method::GET, &format!("/v1/session/info/{holder}"), None)
            .await,
        json!([])
    );

    // Behavior=release: an expired session leaves the key, unheld.
    assert_eq!(
        api.put_kv(&format!("l/k?acquire={other}"), "b").await,
        "true"
    );
    assert!(api.double.expire_session(&other));
    let entry = &api.json(Method::GET, "/v1/kv/l/k", None).await[0];
    assert!(entry.get("Session").is_none());
    assert_eq!(entry["Value"], BASE64.encode("b"));
}

#[tokio::test]
async fn a_session_not_renewed_within_its_ttl_is_invalidated() {
    let api = Api::start().await;
    let session = api
        .json(
            Method::PUT,
            "/v1/session/create",
            Some(json!({"TTL": "10s", "Behavior": "delete"})),
        )
        .await["ID"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        api.put_kv(&format!("e/k?acquire={session}"), "a").await,
        "true"
    );
    // Consul's shortest TTL is 10 s; the double ends the session exactly then.
    tokio::time::sleep(Duration::from_millis(10_200)).await;
    let renew = api
        .call(Method::PUT, &format!("/v1/session/renew/{session}"), None)
        .await;
    assert_eq!(renew.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        api.call(Method::GET, "/v1/kv/e/k", None).await.status(),
        StatusCode::NOT_FOUND,
        "Behavior=delete removed the key the session held"
    );
}

#[tokio::test]
async fn services_start_critical_and_list_in_catalog_and_health() {
    let api = Api::start().await;
    let registered = api
        .call(
            Method::PUT,
            "/v1/agent/service/register",
            Some(json!({
                "ID": "web-1", "Name": "web", "Tags": ["blue"], "Address": "10.0.0.1",
                "Port": 8080, "Meta": {"version": "1"},
                "Check": {"HTTP": "http://10.0.0.1:8080/health", "Interval": "5s", "Timeout": "2s"},
            })),
        )
        .await;
    assert_eq!(registered.status(), StatusCode::OK);

    let catalog = api.json(Method::GET, "/v1/catalog/service/web", None).await;
    let entry = &catalog[0];
    assert_eq!(entry["ServiceID"], "web-1");
    assert_eq!(entry["ServiceName"], "web");
    assert_eq!(entry["ServiceAddress"], "10.0.0.1");
    assert_eq!(entry["ServicePort"], 8080);
    assert_eq!(entry["ServiceTags"], json!(["blue"]));
    assert_eq!(entry["ServiceMeta"], json!({"version": "1"}));
    assert_eq!(
        api.json(Method::GET, "/v1/catalog/service/nobody", None)
            .await,
        json!([])
    );
    let services = api.json(Method::GET, "/v1/catalog/services", None).await;
    assert_eq!(services["web"], json!(["blue"]));
    assert!(services.get("consul").is_some(), "Consul lists itself");

    let passing = api
        .json(Method::GET, "/v1/health/service/web?passing", None)
        .await;
    assert_eq!(passing, json!([]), "a new check starts critical");
    let all = api.json(Method::GET, "/v1/health/service/web", None).await;
    let check = all[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ServiceID"] == "web-1")
        .unwrap();
    assert_eq!(check["Status"], "critical");
    assert_eq!(check["Definition"]["HTTP"], "http://10.0.0.1:8080/health");
    assert!(api.double.set_check_status("web-1", CheckStatus::Passing));
    let passing = api
        .json(Method::GET, "/v1/health/service/web?passing", None)
        .await;
    assert_eq!(passing[0]["Service"]["ID"], "web-1");

    let gone = api
        .call(Method::PUT, "/v1/agent/service/deregister/web-1", None)
        .await;
    assert_eq!(gone.status(), StatusCode::OK);
    let unknown = api
        .call(Method::PUT, "/v1/agent/service/deregister/web-1", None)
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn blocking_queries_wait_for_a_write_or_the_wait_time() {
    let api = Api::start().await;
    api.put_kv("b/k", "1").await;
    let index = index_of(&api.call(Method::GET, "/v1/kv/b/k", None).await);

    // No write: the answer comes when the wait elapses, at the same index.
    let started = Instant::now();
    let response = api
        .call(
            Method::GET,
            &format!("/v1/kv/b/k?index={index}&wait=300ms"),
            None,
        )
        .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(index_of(&response), index);

    // A write releases the waiting read with the new value.
    let address = api.double.address().to_string();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Client::new()
            .put(format!("{address}/v1/kv/b/k"))
            .body("2")
            .send()
            .await
            .unwrap();
    });
    let started = Instant::now();
    let response = api
        .call(
            Method::GET,
            &format!("/v1/kv/b/k?index={index}&wait=10s&raw"),
            None,
        )
        .await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(index_of(&response) > index);
    assert_eq!(response.text().await.unwrap(), "2");
    writer.await.unwrap();
}

#[tokio::test]
async fn a_required_token_is_enforced() {
    let double = ConsulDouble::start_with_token("t0ken").await.unwrap();
    let client = Client::new();
    let url = format!("{}/v1/kv/x", double.address());
    let anonymous = client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::FORBIDDEN);
    let wrong = client
        .get(&url)
        .header("X-Consul-Token", "other")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let header = client
        .get(&url)
        .header("X-Consul-Token", "t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(header.status(), StatusCode::NOT_FOUND, "allowed, and empty");
    let query = client
        .get(format!("{url}?token=t0ken"))
        .send()
        .await
        .unwrap();
    assert_eq!(query.status(), StatusCode::NOT_FOUND);
}

/// What a Python Consul client (py-consul) sends and expects: lowercase keys, a `Checks`
/// array with TTL and TCP checks, `?tag=`, Consul's read headers and its 400s.
#[tokio::test]
async fn bodies_checks_tags_headers_and_lock_delay_as_consul_has_them() {
    let api = Api::start().await;
    let registered = api
        .call(
            Method::PUT,
            "/v1/agent/service/register",
            Some(json!({
                "name": "db", "id": "db-1", "port": 5432, "tags": ["primary"],
                "checks": [{"ttl": "30s"}, {"tcp": "127.0.0.1:1", "interval": "1h"}],
            })),
        )
        .await;
    assert_eq!(registered.status(), StatusCode::OK);
    let checks = api.json(Method::GET, "/v1/agent/checks", None).await;
    assert_eq!(checks["service:db-1:1"]["Type"], "ttl");
    assert_eq!(checks["service:db-1:2"]["Type"], "tcp");
    let passed = api
        .call(
            Method::PUT,
            "/v1/agent/check/pass/service:db-1:1?note=ok",
            None,
        )
        .await;
    assert_eq!(passed.status(), StatusCode::OK);
    let not_ttl = api
        .call(Method::PUT, "/v1/agent/check/pass/service:db-1:2", None)
        .await;
    assert_eq!(not_ttl.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let checks = api.json(Method::GET, "/v1/agent/checks", None).await;
    assert_eq!(checks["service:db-1:1"]["Status"], "passing");
    assert_eq!(checks["service:db-1:1"]["Output"], "ok");

    let tagged = api
        .call(Method::GET, "/v1/health/service/db?tag=primary", None)
        .await;
    assert_eq!(tagged.headers()["X-Consul-KnownLeader"], "true");
    assert_eq!(tagged.headers()["X-Consul-LastContact"], "0");
    assert_eq!(
        tagged
            .json::<Value>()
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let other_tag = api
        .json(Method::GET, "/v1/catalog/service/db?tag=replica", None)
        .await;
    assert_eq!(other_tag, json!([]));

    for (path, message) in [
        ("/v1/kv/x?index=abc", "Invalid index"),
        ("/v1/kv/x?index=1&wait=bogus", "Invalid wait time"),
    ] {
        let refused = api.call(Method::GET, path, None).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(refused.text().await.unwrap(), message);
    }
    for (body, message) in [
        (json!({"port": 1}), "Missing service name"),
        (
            json!({"name": "x", "check": {"http": "http://a/"}}),
            "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or GRPC checks",
        ),
    ] {
        let refused = api
            .call(Method::PUT, "/v1/agent/service/register", Some(body))
            .await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        assert_eq!(refused.text().await.unwrap(), message);
    }

    // Lowercase session keys keep their meaning; LockDelay is reported in nanoseconds and
    // holds the key after the holder's session is destroyed.
    let session = |delay: &'static str| {
        let api = &api;
        async move {
            api.json(
                Method::PUT,
                "/v1/session/create",
                Some(json!({"name": "l", "ttl": "10s", "behavior": "delete", "lockdelay": delay})),
            )
            .await["ID"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let holder = session("1s").await;
    let info = api
        .json(Method::GET, &format!("/v1/session/info/{holder}"), None)
        .await;
    assert_eq!(info[0]["TTL"], "10s");
    assert_eq!(info[0]["Behavior"], "delete");
    assert_eq!(info[0]["LockDelay"], 1_000_000_000u64);
    assert_eq!(
        api.json(Method::GET, "/v1/session/list", None)
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        api.put_kv(&format!("d/k?acquire={holder}"), "a").await,
        "true"
    );
    api.json(Method::PUT, &format!("/v1/session/destroy/{holder}"), None)
        .await;
    let next = session("0s").await;
    assert_eq!(
        api.put_kv(&format!("d/k?acquire={next}"), "b").await,
        "false"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        api.put_kv(&format!("d/k?acquire={next}"), "b").await,
        "true"
    );
}

#[tokio::test]
async fn registrations_keep_weights_and_refuse_what_the_double_does_not_implement() {
    let api = Api::start().await;
    let registered = api
        .call(
            Method::PUT,
            "/v1/agent/service/register",
            Some(json!({"name": "w", "weights": {"passing": 3}, "enabletagoverride": true})),
        )
        .await;
    assert_eq!(registered.status(), StatusCode::OK);
    let services = api.json(Method::GET, "/v1/agent/services", None).await;
    // A field left out of `Weights` is Go's zero; only no `Weights` at all is 1 and 1.
    assert_eq!(
        services["w"]["Weights"],
        json!({"Passing": 3, "Warning": 0})
    );
    assert_eq!(services["w"]["EnableTagOverride"], true);
    let catalog = api.json(Method::GET, "/v1/catalog/service/w", None).await;
    assert_eq!(
        catalog[0]["ServiceWeights"],
        json!({"Passing": 3, "Warning": 0})
    );

    for (body, message) in [
        (
            json!({"name": "x", "weights": {"passing": 0, "warning": 1}}),
            "Invalid Weights: Passing must be greater than 0".to_string(),
        ),
        (
            json!({"name": "x", "address": "0.0.0.0"}),
            "Invalid service address".to_string(),
        ),
        (
            json!({"name": "x", "meta": {"consul-x": "1"}}),
            "Invalid Service Meta: Couldn't load metadata pair ('consul-x', '1'): Key prefix 'consul-' is reserved for internal use".to_string(),
        ),
        (
            json!({"name": "x", "kind": "connect-proxy"}),
            "Invalid service: Kind is not implemented by this Consul double (services with ID, Name, Tags, Address, Port, Meta, Weights, EnableTagOverride and checks are)".to_string(),
        ),
        (
            json!({"name": "x", "tagged_addresses": {"lan": {"address": "10.0.0.1", "port": 1}}}),
            "Invalid service: TaggedAddresses is not implemented by this Consul double (services with ID, Name, Tags, Address, Port, Meta, Weights, EnableTagOverride and checks are)".to_string(),
        ),
    ] {
        let refused = api
            .call(Method::PUT, "/v1/agent/service/register", Some(body.clone()))
            .await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(refused.text().await.unwrap(), message);
    }
    let services = api.json(Method::GET, "/v1/agent/services", None).await;
    assert!(
        services.get("x").is_none(),
        "a refused registration changed nothing"
    );
}

#[tokio::test]
async fn session_lock_delay_below_a_microsecond_is_seconds_and_checks_are_listed_as_consul_does() {
    let api = Api::start().await;
    // Consul's FixupLockDelay: below 1000 (ns), a number or duration means seconds.
    for (delay, nanos) in [
        (json!(5), 5_000_000_000u64),
        (json!("5ns"), 5_000_000_000),
        (json!(2_000_000_000u64), 2_000_000_000),
        (json!("250ms"), 250_000_000),
    ] {
        let id = api
            .json(
                Method::PUT,
                "/v1/session/create",
                Some(json!({"LockDelay": delay})),
            )
            .await["ID"]
            .as_str()
            .unwrap()
            .to_string();
        let info = api
            .json(Method::GET, &format!("/v1/session/info/{id}"), None)
            .await;
        assert_eq!(info[0]["LockDelay"], nanos, "{delay}");
        // The deprecated `Checks` is left out when serfHealth is the only check.
        assert!(info[0].get("Checks").is_none(), "{info}");
        assert_eq!(info[0]["NodeChecks"], json!(["serfHealth"]));
    }
    let empty = api.json(Method::GET, "/v1/session/info/nope", None).await;
    assert_eq!(empty, json!([]));

    // Consul validates these in the server's Session.Apply: 500s, in its words.
    for (body, message) in [
        (
            json!({"ttl": "5s"}),
            "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]",
        ),
        (
            json!({"behavior": "explode", "ttl": "5s"}),
            "Invalid Behavior setting 'explode'",
        ),
        (
            json!({"ttl": "soon"}),
            "Session TTL 'soon' invalid: time: invalid duration \"soon\"",
        ),
    ] {
        let refused = api
            .call(Method::PUT, "/v1/session/create", Some(body.clone()))
            .await;
        assert_eq!(
            refused.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "{body}"
        );
        assert_eq!(refused.text().await.unwrap(), message);
    }
    let sessions = api.json(Method::GET, "/v1/session/list", None).await;
    assert_eq!(
        sessions.as_array().unwrap().len(),
        4,
        "only the four sessions created above, none of the refused ones: {sessions}"
    );
}

#[tokio::test]
async fn another_datacenter_and_unimplemented_txn_verbs_are_refused_by_name() {
    let api = Api::start().await;
    let elsewhere = api.call(Method::GET, "/v1/kv/x?dc=dc2", None).await;
    assert_eq!(elsewhere.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(elsewhere
        .text()
        .await
        .unwrap()
        .starts_with("No path to datacenter"));
    let here = api.call(Method::GET, "/v1/kv/x?dc=dc1", None).await;
    assert_eq!(here.status(), StatusCode::NOT_FOUND);
    let lock = api
        .call(
            Method::PUT,
            "/v1/txn",
            Some(json!([{"KV": {"Verb": "lock", "Key": "k", "Session": "s"}}])),
        )
        .await;
    assert_eq!(lock.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        lock.text().await.unwrap(),
        "KV verb \"lock\" is not implemented by this Consul double"
    );
}

#[tokio::test]
async fn checks_of_their_own_count_in_health_and_narrowing_parameters_are_refused() {
    let api = Api::start().await;
    let web = api
        .call(
            Method::PUT,
            "/v1/agent/service/register",
            Some(json!({"name": "web"})),
        )
        .await;
    assert_eq!(web.status(), StatusCode::OK);
    let registered = api
        .call(
            Method::PUT,
            "/v1/agent/check/register",
            Some(json!({"name": "disk", "ttl": "30s"})),
        )
        .await;
    assert_eq!(registered.status(), StatusCode::OK);
    // A node check (no ServiceID), critical at first: no instance on the node is passing.
    let passing = api
        .json(Method::GET, "/v1/health/service/web?passing", None)
        .await;
    assert_eq!(passing, json!([]));
    api.call(Method::PUT, "/v1/agent/check/pass/disk", None)
        .await;
    let passing = api
        .json(Method::GET, "/v1/health/service/web?passing", None)
        .await;
    assert_eq!(passing.as_array().unwrap().len(), 1);
    let critical = api
        .json(Method::GET, "/v1/health/state/critical", None)
        .await;
    assert_eq!(critical, json!([]));
    let bad_state = api.call(Method::GET, "/v1/health/state/sad", None).await;
    assert_eq!(bad_state.status(), StatusCode::BAD_REQUEST);
    assert_eq!(bad_state.text().await.unwrap(), "Bad state");
    let orphan = api
        .call(
            Method::PUT,
            "/v1/agent/check/register",
            Some(json!({"name": "o", "ttl": "30s", "serviceid": "nope"})),
        )
        .await;
    assert_eq!(orphan.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        orphan.text().await.unwrap(),
        "ServiceID \"nope\" does not exist"
    );
    let gone = api
        .call(Method::PUT, "/v1/agent/check/deregister/disk", None)
        .await;
    assert_eq!(gone.status(), StatusCode::OK);
    let again = api
        .call(Method::PUT, "/v1/agent/check/deregister/disk", None)
        .await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);

    let filtered = api
        .call(
            Method::GET,
            "/v1/health/service/web?filter=Service.Port%3D%3D1",
            None,
        )
        .await;
    assert_eq!(filtered.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        filtered.text().await.unwrap(),
        "?filter= is not implemented by this Consul double"
    );
}

#[tokio::test]
async fn values_and_transactions_over_consuls_limits_are_refused() {
    let api = Api::start().await;
    let big = "x".repeat(512 * 1024 + 1);
    let refused = api
        .client
        .put(format!("{}/v1/kv/big", api.double.address()))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(refused
        .text()
        .await
        .unwrap()
        .starts_with("Request body(524289 bytes) too large, max size: 524288 bytes"));
    let at_limit = api.put_kv("big", &"x".repeat(512 * 1024)).await;
    assert_eq!(at_limit, "true");

    let operations: Vec<Value> = (0..129)
        .map(|n| json!({"KV": {"Verb": "set", "Key": format!("t/{n}"), "Value": ""}}))
        .collect();
    let too_many = api
        .call(Method::PUT, "/v1/txn", Some(json!(operations)))
        .await;
    assert_eq!(too_many.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        too_many.text().await.unwrap(),
        "Transaction contains too many operations (129 > 128)"
    );
    let nothing = api.call(Method::GET, "/v1/kv/t/?recurse", None).await;
    assert_eq!(nothing.status(), StatusCode::NOT_FOUND);
}
