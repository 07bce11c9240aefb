//! The cross-instance sync step: a band of members (`band.rs`) playing the band script.

use bandsync_common::metrics::MetricSet;
use bandsync_common::workloads::SessionSync;

use super::band::{self, Script};
use super::{Run, StepContext, WorkloadError};

impl Run for SessionSync {
    async fn run(&self, ctx: &StepContext) -> Result<MetricSet, WorkloadError> {
        let params = band::Params {
            band: self.0,
            script: Script::Band,
            window: None,
        };
        band::run_with(params, ctx).await
    }
}
