//! Two `bandsync-server` instances sharing one real `redis-server`, driven by rust_socketio
//! clients (websocket transport, emitting only after Connect): the instances must behave as one
//! server, keep serving through a Redis outage and heal after it.

use std::time::Duration;

use bandsync_coordinator::testbed::RedisServer;
use bandsync_server::{ServerConfig, serve};
use futures_util::FutureExt;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Event, Payload, TransportType};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(5);

struct Instance {
    url: String,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Instance {
    async fn start(name: &str, redis_url: &str, prefix: &str) -> Instance {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let cfg = ServerConfig::new(name, redis_url, prefix);
        let token = stop.clone();
        let task = tokio::spawn(async move { serve(cfg, listener, token).await.expect("server ran") });
        let inst = Instance {
            url,
            stop,
            task: Some(task),
        };
        // Ready when Redis is seen (the health loop pings every 250 ms).
        inst.wait_health("ok").await;
        inst
    }

    async fn health(&self) -> Value {
        http_get_json(&format!("{}/health", self.url)).await
    }

    async fn wait_health(&self, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let h = self.health().await;
            if h["status"] == status {
                return h;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "health never became {status}: {h}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server stops within 10 s")
                .unwrap();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A minimal HTTP/1.1 GET (the test has no HTTP client dependency).
async fn http_get_json(url: &str) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let body = buf.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap_or_else(|e| panic!("health body {body:?}: {e}"))
}

struct Cluster {
    redis: RedisServer,
    a: Instance,
    b: Instance,
    prefix: String,
}

impl Cluster {
    async fn start() -> Cluster {
        let redis = RedisServer::start()
            .await
            .expect("redis-server (apt-get install -y redis-server)");
        let prefix = format!("bandsync-test-{}", fastrand_id());
        let a = Instance::start("A", &redis.url(), &prefix).await;
        let b = Instance::start("B", &redis.url(), &prefix).await;
        Cluster { redis, a, b, prefix }
    }

    async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// The stored hash: (version, data) or None.
    async fn stored(&self, session: &str) -> Option<(u64, Value)> {
        let mut con = self.redis().await;
        let (data, version): (Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(format!("{}:session:{session}", self.prefix))
            .arg("data")
            .arg("version")
            .query_async(&mut con)
            .await
            .unwrap();
        Some((version?, serde_json::from_str(&data?).unwrap()))
    }
}

fn fastrand_id() -> String {
    format!("{}-{}", std::process::id(), bandsync_server::now_ms())
}

/// A band member: a Socket.IO client whose events land in a channel.
struct Member {
    client: Client,
    events: mpsc::UnboundedReceiver<(String, Value)>,
}

impl Member {
    async fn connect(url: &str) -> Member {
        let (tx, events) = mpsc::unbounded_channel();
        let (ctx, crx) = tokio::sync::oneshot::channel::<()>();
        let ctx = std::sync::Mutex::new(Some(ctx));
        let client = ClientBuilder::new(url)
            .transport_type(TransportType::Websocket)
            .reconnect(false)
            .on(Event::Connect, move |_, _| {
                if let Some(tx) = ctx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                async {}.boxed()
            })
            .on_any(move |event, payload, _| {
                if let (Event::Custom(name), Payload::Text(args)) = (event, payload) {
                    let _ = tx.send((name, args.into_iter().next().unwrap_or(Value::Null)));
                }
                async {}.boxed()
            })
            .connect()
            .await
            .expect("socket.io connect");
        tokio::time::timeout(WAIT, crx)
            .await
            .expect("Connect within 5 s")
            .unwrap();
        Member { client, events }
    }

    async fn emit(&self, event: &str, payload: Value) {
        self.client.emit(event, payload).await.expect("emit");
    }

    /// Emits and waits for the ack (one in flight per client: rust_socketio's ack ids collide).
    async fn ack(&self, event: &str, payload: Value) -> Value {
        let (tx, rx) = tokio::sync::oneshot::channel::<Value>();
        let tx = std::sync::Mutex::new(Some(tx));
        self.client
            .emit_with_ack(event, payload, WAIT, move |p: Payload, _| {
                let v = match p {
                    Payload::Text(mut args) => match args.pop() {
                        Some(Value::Array(mut inner)) if !inner.is_empty() => inner.remove(0),
                        Some(v) => v,
                        None => Value::Null,
                    },
                    _ => Value::Null,
                };
                if let Some(tx) = tx.lock().unwrap().take() {
                    let _ = tx.send(v);
                }
                async {}.boxed()
            })
            .await
            .expect("emit_with_ack");
        tokio::time::timeout(WAIT, rx).await.expect("ack within 5 s").unwrap()
    }

    /// The next `event` whose payload satisfies `pred`, skipping others; None after `within`.
    async fn until(&mut self, event: &str, within: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (name, v) = tokio::time::timeout_at(deadline, self.events.recv()).await.ok()??;
            if name == event && pred(&v) {
                return Some(v);
            }
        }
    }

    async fn expect(&mut self, event: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.until(event, WAIT, pred)
            .await
            .unwrap_or_else(|| panic!("no {event} with {what} within {WAIT:?}"))
    }

    fn drain(&mut self) {
        while self.events.try_recv().is_ok() {}
    }

    /// Joins and returns this member's socket id (from the snapshot's member list).
    async fn join(&mut self, session: &str, name: &str) -> String {
        self.emit("join_session", json!({"sessionId": session, "displayName": name}))
            .await;
        let snap = self
            .expect("snapshot", "the joiner listed", |s| member_id(s, name).is_some())
            .await;
        member_id(&snap, name).unwrap()
    }
}

fn member_id(snapshot: &Value, name: &str) -> Option<String> {
    snapshot["members"]
        .as_array()?
        .iter()
        .find(|m| m["displayName"] == name)
        .and_then(|m| m["socketId"].as_str().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_on_a_reaches_a_follower_on_b_and_a_followers_command_changes_nothing() {
    let c = Cluster::start().await;
    let mut leader = Member::connect(&c.a.url).await;
    let mut follower = Member::connect(&c.b.url).await;
    let leader_id = leader.join("s1", "leader").await;
    follower.join("s1", "follower").await;
    leader
        .expect("snapshot", "both members", |s| {
            s["members"].as_array().unwrap().len() == 2
        })
        .await;
    leader
        .emit("set_role", json!({"sessionId": "s1", "role": "leader"}))
        .await;
    follower
        .expect("snapshot", "the leader (across instances)", |s| {
            s["leaderSocketId"] == leader_id.as_str()
        })
        .await;
    leader.emit("set_tempo", json!({"sessionId": "s1", "tempo": 128})).await;
    let snap = follower.expect("snapshot", "tempo 128", |s| s["tempo"] == 128.0).await;
    assert_eq!(snap["tempoBpm"], 128.0);
    assert!(snap["serverTimestamp"].as_i64().unwrap() > 1_600_000_000_000);
    let (version, data) = c.stored("s1").await.unwrap();
    assert_eq!(snap["version"], version, "the snapshot carries the stored version");
    assert_eq!(data["tempo"], 128.0);

    // The follower's set_tempo: refused with a code, nothing stored, nothing broadcast.
    leader.drain();
    follower
        .emit("set_tempo", json!({"sessionId": "s1", "tempo": 60}))
        .await;
    let err = follower.expect("session_error", "a code", |_| true).await;
    assert_eq!(err["code"], "NOT_LEADER");
    assert_eq!(err["event"], "set_tempo");
    let ack = follower.ack("set_tempo", json!({"sessionId": "s1", "tempo": 61})).await;
    assert_eq!(ack["ok"], false);
    assert_eq!(ack["code"], "NOT_LEADER");
    assert!(
        leader
            .until("snapshot", Duration::from_millis(300), |_| true)
            .await
            .is_none()
    );
    let (after, data) = c.stored("s1").await.unwrap();
    assert_eq!((after, data["tempo"].clone()), (version, json!(128.0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ticks_on_both_instances_agree_on_position() {
    let c = Cluster::start().await;
    let mut on_a = Member::connect(&c.a.url).await;
    let mut on_b = Member::connect(&c.b.url).await;
    on_a.join("s2", "a").await;
    on_b.join("s2", "b").await;
    on_a.emit("set_role", json!({"sessionId": "s2", "role": "leader"}))
        .await;
    on_a.emit("seek", json!({"sessionId": "s2", "position": 1000})).await;
    on_a.emit("play", json!({"sessionId": "s2"})).await;
    on_b.expect("snapshot", "playing", |s| s["isPlaying"] == true).await;
    let collect = async |m: &mut Member| {
        let mut ticks = std::collections::BTreeMap::new();
        let end = tokio::time::Instant::now() + Duration::from_millis(1500);
        while let Some(t) = m
            .until("scroll_tick", end - tokio::time::Instant::now(), |_| true)
            .await
        {
            ticks.insert(
                t["positionMs"].as_f64().unwrap() as i64,
                t["serverTimestamp"].as_i64().unwrap(),
            );
        }
        ticks
    };
    let (ta, tb) = tokio::join!(collect(&mut on_a), collect(&mut on_b));
    assert!(ta.len() >= 10 && tb.len() >= 10, "ticks: A {} B {}", ta.len(), tb.len());
    for ticks in [&ta, &tb] {
        let positions: Vec<i64> = ticks.keys().copied().collect();
        assert!(
            positions.windows(2).all(|w| w[1] - w[0] == 100),
            "one tick per 100 ms: {positions:?}"
        );
        assert!(
            positions.iter().all(|p| (p - 1000) % 100 == 0),
            "aligned to the play start: {positions:?}"
        );
    }
    let common: Vec<_> = ta.keys().filter(|p| tb.contains_key(p)).collect();
    assert!(common.len() + 2 >= ta.len().min(tb.len()), "A {ta:?}\nB {tb:?}");
    for p in common {
        let skew = (ta[p] - tb[p]).abs();
        assert!(skew < 100, "position {p}: A and B ticked {skew} ms apart");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_leaders_across_instances_lose_no_update() {
    let c = Cluster::start().await;
    let mut members = Vec::new();
    for i in 0..20 {
        let url = if i % 2 == 0 { &c.a.url } else { &c.b.url };
        let mut m = Member::connect(url).await;
        m.join("s3", &format!("m{i}")).await;
        members.push(m);
    }
    let joined = c.stored("s3").await.unwrap().0;
    assert_eq!(joined, 20);
    let tasks = members.into_iter().enumerate().map(|(i, m)| {
        tokio::spawn(async move {
            let mut accepted = 0u64;
            let mut rejected = 0u64;
            for round in 0..10 {
                let r = m.ack("set_role", json!({"sessionId": "s3", "role": "leader"})).await;
                accepted += u64::from(r["changed"] == true);
                let r = m
                    .ack("set_tempo", json!({"sessionId": "s3", "tempo": 40 + i * 10 + round}))
                    .await;
                match r["ok"].as_bool() {
                    Some(true) => accepted += u64::from(r["changed"] == true),
                    _ => {
                        assert_eq!(r["code"], "NOT_LEADER", "{r}");
                        rejected += 1;
                    }
                }
            }
            (accepted, rejected, m)
        })
    });
    let mut accepted = 0;
    let mut rejected = 0;
    let mut keep = Vec::new();
    for t in tasks {
        let (a, r, m) = t.await.unwrap();
        accepted += a;
        rejected += r;
        keep.push(m);
    }
    let (version, data) = c.stored("s3").await.unwrap();
    assert_eq!(
        version,
        joined + accepted,
        "every accepted change is one version ({rejected} rejected)"
    );
    assert_eq!(data["members"].as_array().unwrap().len(), 20);
    assert!(
        accepted >= 20,
        "some takeovers and tempo changes went through: {accepted}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_degrades_gracefully_and_heals_into_an_empty_redis() {
    let mut c = Cluster::start().await;
    let mut leader = Member::connect(&c.a.url).await;
    let mut same = Member::connect(&c.a.url).await;
    let mut other = Member::connect(&c.b.url).await;
    leader.join("s4", "leader").await;
    same.join("s4", "same").await;
    other.join("s4", "other").await;
    leader
        .emit("set_role", json!({"sessionId": "s4", "role": "leader"}))
        .await;
    leader.emit("play", json!({"sessionId": "s4"})).await;
    other.expect("snapshot", "playing", |s| s["isPlaying"] == true).await;
    let (before, _) = c.stored("s4").await.unwrap();

    c.redis.kill();
    c.a.wait_health("degraded").await;
    let h = c.b.wait_health("degraded").await;
    assert_eq!(h["redis"]["state"], "down");
    same.drain();
    other.drain();
    // Both instances keep ticking for their own members.
    same.expect("scroll_tick", "a tick during the outage", |_| true).await;
    other.expect("scroll_tick", "a tick during the outage", |_| true).await;
    // Same-instance snapshots still flow.
    leader.emit("set_tempo", json!({"sessionId": "s4", "tempo": 90})).await;
    let told = same
        .expect("snapshot", "tempo 90 during the outage", |s| s["tempo"] == 90.0)
        .await;

    c.redis.restart().await.expect("redis restarts");
    // The hash is rebuilt from memory and a snapshot re-broadcast to every instance's members.
    let healed = other
        .expect("snapshot", "tempo 90 after Redis returned", |s| s["tempo"] == 90.0)
        .await;
    assert!(healed["version"].as_u64().unwrap() > told["version"].as_u64().unwrap());
    assert_eq!(healed["members"].as_array().unwrap().len(), 3);
    let deadline = tokio::time::Instant::now() + WAIT;
    let (version, data) = loop {
        if let Some(s) = c.stored("s4").await
            && s.1["members"].as_array().unwrap().len() == 3
        {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "session hash not rebuilt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(version > before);
    assert_eq!(data["tempo"], 90.0);
    assert_eq!(data["isPlaying"], true);
    let (ha, hb) = (c.a.wait_health("ok").await, c.b.wait_health("ok").await);
    let written_back = ha["counters"]["writeBacks"].as_u64().unwrap() + hb["counters"]["writeBacks"].as_u64().unwrap();
    assert!(written_back >= 1, "the instances wrote their sessions back: {ha} {hb}");
    // And the cluster is one server again: a change on A reaches B.
    leader.emit("set_tempo", json!({"sessionId": "s4", "tempo": 95})).await;
    other
        .expect("snapshot", "tempo 95 after healing", |s| s["tempo"] == 95.0)
        .await;
}

/// The last member leaving on one instance while another joins on the other leaves no ghost:
/// the joiner's instance must not rebuild the deleted session from its cache (that brought the
/// departed member back, with a socket that no longer exists).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_join_racing_the_last_leave_on_another_instance_leaves_no_ghost() {
    let c = Cluster::start().await;
    let mut ghosts = Vec::new();
    for trial in 0..40 {
        let session = format!("ghost{trial}");
        let mut last = Member::connect(&c.b.url).await;
        last.join(&session, "last").await;
        let joiner = Member::connect(&c.a.url).await;
        // The joiner's instance reads the session (with `last` in it) while `last` leaves.
        let join = joiner
            .client
            .emit("join_session", json!({"sessionId": session, "displayName": "joiner"}));
        let leave = last.client.disconnect();
        let (j, _) = tokio::join!(join, leave);
        j.expect("join emitted");
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Some((_, data)) = c.stored(&session).await
            && data.to_string().contains("\"last\"")
        {
            ghosts.push(trial);
        }
        let _ = joiner.client.disconnect().await;
    }
    assert!(ghosts.is_empty(), "the departed member stayed in trials {ghosts:?}");
}

/// A member of an instance whose socket is gone (a leave that never landed) is removed by that
/// instance's anti-entropy within seconds, instead of living on under the session's 24 h TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anti_entropy_removes_a_member_whose_socket_is_gone() {
    let c = Cluster::start().await;
    let mut m = Member::connect(&c.a.url).await;
    m.join("haunted", "alive").await;
    // Plant a ghost of instance A in the stored session, as a lost leave would leave it.
    let (version, mut data) = c.stored("haunted").await.unwrap();
    let mut ghost = data["members"][0].clone();
    ghost["socketId"] = json!("gone-socket-id");
    ghost["displayName"] = json!("ghost");
    data["members"].as_array_mut().unwrap().push(ghost);
    let mut con = c.redis().await;
    redis::cmd("HSET")
        .arg(format!("{}:session:haunted", c.prefix))
        .arg("data")
        .arg(data.to_string())
        .arg("version")
        .arg(version + 1)
        .query_async::<()>(&mut con)
        .await
        .unwrap();
    let mut names = Vec::new();
    for _ in 0..50 {
        let (_, data) = c.stored("haunted").await.unwrap();
        names = data["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["displayName"].as_str().unwrap().to_owned())
            .collect();
        if names == ["alive"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(names, ["alive"], "the ghost was not removed within 5 s");
    assert_eq!(c.a.health().await["counters"]["ghostsPruned"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_websocket_message_over_16_kib_closes_that_connection_only() {
    let c = Cluster::start().await;
    let mut m = Member::connect(&c.a.url).await;
    m.join("s16", "big").await;
    let _ = m
        .client
        .emit("sync_request", json!({"sessionId": "s16", "pad": "x".repeat(40_000)}))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    m.drain();
    // The connection is gone: a small request gets no answer.
    let _ = m.client.emit("sync_request", json!({"sessionId": "s16"})).await;
    assert!(
        m.until("sync_response", Duration::from_millis(1500), |_| true)
            .await
            .is_none(),
        "the server kept a connection that sent a 40 KB message"
    );
    // The server itself is fine.
    let mut other = Member::connect(&c.a.url).await;
    other.join("s16b", "small").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_payloads_are_rejected_with_their_code_and_change_nothing() {
    let c = Cluster::start().await;
    let mut m = Member::connect(&c.a.url).await;
    m.join("s5", "m").await;
    let (version, data) = c.stored("s5").await.unwrap();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("join_session", json!("s5"), "BAD_PAYLOAD"),
        ("join_session", json!(42), "BAD_PAYLOAD"),
        ("join_session", json!({}), "INVALID_SESSION_ID"),
        ("join_session", json!({"sessionId": 5}), "INVALID_SESSION_ID"),
        (
            "join_session",
            json!({"sessionId": "x".repeat(200)}),
            "INVALID_SESSION_ID",
        ),
        ("join_session", json!({"sessionId": "s5 ; DROP"}), "INVALID_SESSION_ID"),
        (
            "join_session",
            json!({"sessionId": "s6", "displayName": "n".repeat(100)}),
            "INVALID_DISPLAY_NAME",
        ),
        ("set_role", json!({"sessionId": "s5", "role": "boss"}), "INVALID_ROLE"),
        ("set_tempo", json!({"sessionId": "s5", "tempo": "120"}), "INVALID_TEMPO"),
        ("set_tempo", json!({"sessionId": "s5", "tempo": 10}), "INVALID_TEMPO"),
        ("set_tempo", json!({"sessionId": "s5", "tempo": 301}), "INVALID_TEMPO"),
        ("set_tempo", json!({"sessionId": "s5", "tempo": 120}), "NOT_LEADER"),
        ("play", json!({"sessionId": "nope"}), "NOT_MEMBER"),
        ("seek", json!({"sessionId": "s5", "position": -5}), "INVALID_POSITION"),
        ("sync_request", json!({"sessionId": "nope"}), "NOT_MEMBER"),
        ("sync_request", json!([1, 2]), "BAD_PAYLOAD"),
        ("leave_session", json!(true), "BAD_PAYLOAD"),
        ("launch_missiles", json!({"sessionId": "s5"}), "UNKNOWN_EVENT"),
    ];
    for (event, payload, code) in &cases {
        m.emit(event, payload.clone()).await;
        let err = m.expect("session_error", code, |_| true).await;
        assert_eq!(err["code"], *code, "{event} {payload}");
    }
    assert_eq!(
        c.stored("s5").await.unwrap(),
        (version, data.clone()),
        "rejected commands changed the session"
    );
    assert!(c.stored("s6").await.is_none());

    // A payload that is not JSON: the packet cannot be parsed; nothing changes, the server lives on.
    let raw = Member::connect(&c.a.url).await;
    #[allow(deprecated)]
    let _ = raw
        .client
        .emit("join_session", Payload::String("{not json".into()))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        c.stored("s5").await.unwrap(),
        (version, data),
        "non-JSON changed the session"
    );

    // A payload over the size limit closes that connection; the server and the session live on.
    let big = Member::connect(&c.a.url).await;
    let _ = big
        .client
        .emit(
            "join_session",
            json!({"sessionId": "s5", "displayName": "z".repeat(100_000)}),
        )
        .await;
    let mut again = Member::connect(&c.a.url).await;
    again.join("s5", "again").await;
    m.emit("sync_request", json!({"sessionId": "s5"})).await;
    let sync = m.expect("sync_response", "a sync response", |_| true).await;
    assert_eq!(sync["sessionId"], "s5");
    assert!(sync["serverTimestamp"].is_i64());
    let h = c.a.health().await;
    assert!(h["counters"]["commandsRejected"].as_u64().unwrap() >= cases.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopping_instance_takes_its_members_out_of_the_session() {
    let mut c = Cluster::start().await;
    let mut on_a = Member::connect(&c.a.url).await;
    let mut on_b = Member::connect(&c.b.url).await;
    on_a.join("s7", "a").await;
    on_b.join("s7", "b").await;
    on_a.emit("set_role", json!({"sessionId": "s7", "role": "leader"}))
        .await;
    on_a.emit("play", json!({"sessionId": "s7"})).await;
    on_b.expect("snapshot", "playing", |s| s["isPlaying"] == true).await;
    c.a.stop().await;
    let snap = on_b
        .expect("snapshot", "only b left", |s| {
            s["members"].as_array().unwrap().len() == 1
        })
        .await;
    assert_eq!(snap["isPlaying"], false, "the leader left: playback paused");
    assert_eq!(snap["leaderSocketId"], Value::Null);
    let (_, data) = c.stored("s7").await.unwrap();
    assert_eq!(data["members"].as_array().unwrap().len(), 1);
    on_b.emit("leave_session", Value::Null).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while c.stored("s7").await.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "an empty session's hash is deleted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The binary: configured by environment (PORT, REDIS_URL, REDIS_PREFIX), prints its address,
/// and on SIGTERM takes its members out of their sessions before exiting 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_binary_reads_its_environment_and_leaves_cleanly_on_sigterm() {
    use std::io::BufRead as _;
    let redis = RedisServer::start().await.unwrap();
    let prefix = format!("bandsync-bin-{}", fastrand_id());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bandsync-server"))
        .env("PORT", "0")
        .env("BIND", "127.0.0.1")
        .env("REDIS_URL", redis.url())
        .env("REDIS_PREFIX", &prefix)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("address line")
        .to_owned();
    let url = format!("http://{addr}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while http_get_json(&format!("{url}/health")).await["status"] != "ok" {
        assert!(tokio::time::Instant::now() < deadline, "never healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut m = Member::connect(&url).await;
    m.join("bin", "m").await;
    let key = format!("{prefix}:session:bin");
    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let exists: bool = redis::cmd("EXISTS").arg(&key).query_async(&mut con).await.unwrap();
    assert!(exists, "the session is stored under REDIS_PREFIX");

    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no exit within 10 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit {status}");
    let exists: bool = redis::cmd("EXISTS").arg(&key).query_async(&mut con).await.unwrap();
    assert!(!exists, "the member left on shutdown, so the empty session was deleted");
}
