//! Host-side bindings of the `xylem:task` WIT package (world `plugin`).

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../../wit",
    imports: { default: async },
    exports: { default: async },
});

pub(crate) use exports::xylem::task::handler::TaskError as WitTaskError;
pub(crate) use xylem::task::types::{
    Callback as WitCallback, EnqueueError as WitEnqueueError, EnqueueOptions as WitEnqueueOptions,
    Enqueued as WitEnqueued, Level as WitLevel, TaskInfo as WitTaskInfo,
    TaskOptions as WitTaskOptions, TaskSpec as WitTaskSpec,
};
