//! Every step kind survives the wire: kind + JSON parameters, and bad ones are refused by name.

use std::time::Duration;

use bandsync_common::plan::{FaultMode, StepSpec};
use bandsync_common::workloads::band::Band;
use bandsync_common::workloads::redis_concurrent::Connections;
use bandsync_common::workloads::session_concurrent_updates::Locking;
use bandsync_common::workloads::*;
use bandsync_proto::pb;

#[test]
fn step_specs_survive_the_wire() {
    for s in [
        StepSpec::TimestampGeneration(TimestampGeneration {
            iterations: 1000,
            batch_size: 100,
        }),
        StepSpec::TimestampPrecision(TimestampPrecision {
            duration: Duration::from_millis(1500),
            max_samples: 7,
        }),
        StepSpec::RedisBasicOps(RedisBasicOps {
            iterations: 3,
            members: 10,
            clients: 4,
            open: None,
        }),
        StepSpec::RedisConcurrent(RedisConcurrent {
            clients: 50,
            operations: 100,
            members: 4,
            connections: Connections::PerClient,
            open: None,
        }),
        StepSpec::RedisMemory(RedisMemory {
            sessions: 1000,
            members: 8,
            sample: 50,
        }),
        StepSpec::SessionIntegrity(SessionIntegrity { sessions: 100 }),
        StepSpec::SessionConcurrentUpdates(SessionConcurrentUpdates {
            updaters: 50,
            updates: 2,
            members: 4,
            locking: Locking::None,
            max_retries: 9,
        }),
        StepSpec::RedisPool(RedisPool {
            pool_size: 20,
            interval: Duration::from_millis(50),
            duration: Duration::from_secs(10),
        }),
        StepSpec::EventConsistency(EventConsistency {
            clients: 3,
            interval: Duration::from_millis(100),
            settle: Duration::from_secs(2),
        }),
        StepSpec::SessionSync(SessionSync(Band {
            sessions: 4,
            members: 6,
            changes: 12,
            interval: Duration::from_millis(500),
            ramp_up: Duration::from_secs(2),
            settle: Duration::from_secs(2),
        })),
        StepSpec::RedisFailover(RedisFailover {
            mode: FaultMode::Restart,
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(3),
            recovery: Duration::from_secs(8),
            clients: 4,
            keys: 100,
            persist: true,
            sessions: 2,
            members: 4,
        }),
    ] {
        let wire = pb::StepSpec::from(&s);
        assert_eq!(StepSpec::try_from(&wire).unwrap(), s);
    }
    assert!(StepSpec::try_from(&pb::StepSpec::default()).is_err());
    let unknown = pb::StepSpec {
        kind: "redis_fancy".into(),
        params: b"{}".to_vec(),
    };
    assert!(
        StepSpec::try_from(&unknown)
            .unwrap_err()
            .to_string()
            .contains("redis_fancy")
    );
    let bad = pb::StepSpec {
        kind: "redis_pool".into(),
        params: br#"{"pool_size": "many"}"#.to_vec(),
    };
    assert!(StepSpec::try_from(&bad).unwrap_err().to_string().contains("redis_pool"));
}
