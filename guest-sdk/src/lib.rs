//! Write Xylem task plugins in Rust.
//!
//! A task is an ordinary function from a serde type to a serde type; a plugin
//! lists its tasks once and exports them with [`export_plugin!`]. The SDK
//! generates the component bindings for the `xylem:task` WIT package,
//! (de)serialises JSON arguments and results, and maps [`TaskError`] to the
//! WIT `task-error` variant.
//!
//! ```ignore
//! use serde::Deserialize;
//! use xylem_guest::{Context, Task, TaskResult};
//!
//! #[derive(Deserialize)]
//! struct Greet { name: String }
//!
//! fn greet(ctx: &Context, args: Greet) -> TaskResult<String> {
//!     ctx.log_info(&format!("greeting {}", args.name));
//!     Ok(format!("Hello, {}!", args.name))
//! }
//!
//! fn tasks() -> Vec<Task> {
//!     vec![Task::new("hello.greet", greet).description("Greets someone")]
//! }
//!
//! xylem_guest::export_plugin!(tasks);
//! ```
//!
//! Build it with `xylem plugin build path/to/crate` (or `cargo build
//! --release --target wasm32-wasip2`); the crate must be a `cdylib`.

// Lets the generated bindings name this crate the same way from inside and
// from the plugin crates that expand `export_plugin!`.
extern crate self as xylem_guest;

pub mod canvas;
mod context;
mod error;
mod task;
#[cfg(feature = "workflow")]
pub mod workflow;

pub use context::{Callback, Context, EnqueueError, EnqueueOptions, Enqueued, Level, Unique};
pub use error::{TaskError, TaskResult};
pub use task::Task;

pub use serde;
pub use serde_json;

#[doc(hidden)]
pub use wit_bindgen;

/// The generated bindings of the `xylem:task` world `plugin`.
///
/// Plugin authors do not need them; they are public so that the
/// [`export_plugin!`] macro can reach them from a plugin crate.
#[doc(hidden)]
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "xylem_guest::bindings",
        runtime_path: "xylem_guest::wit_bindgen::rt",
    });
}

/// The generated bindings of the `xylem:workflow` world `workflow-plugin`
/// (feature `workflow`); reached through [`export_workflows!`].
#[cfg(feature = "workflow")]
#[doc(hidden)]
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod workflow_bindings {
    wit_bindgen::generate!({
        world: "workflow-plugin",
        path: "../wit/workflow",
        pub_export_macro: true,
        export_macro_name: "__export_workflow_world",
        default_bindings_module: "xylem_guest::workflow_bindings",
        runtime_path: "xylem_guest::wit_bindgen::rt",
    });
}

/// Exports a workflow plugin whose workflows are returned by the function
/// `$workflows` (a `fn() -> Vec<workflow::Workflow>`); feature `workflow`.
#[cfg(feature = "workflow")]
#[macro_export]
macro_rules! export_workflows {
    ($workflows:path) => {
        #[doc(hidden)]
        struct __XylemWorkflows;

        impl $crate::workflow_bindings::exports::xylem::workflow::workflow::Guest for __XylemWorkflows {
            fn describe() -> ::std::vec::Vec<$crate::workflow_bindings::xylem::workflow::types::WorkflowSpec> {
                $crate::workflow::__private::describe(&$workflows())
            }

            fn run(
                name: ::std::string::String,
                input: ::std::string::String,
            ) -> ::std::result::Result<::std::string::String, ::std::string::String> {
                $crate::workflow::__private::run(&$workflows(), &name, &input)
            }
        }

        $crate::workflow_bindings::__export_workflow_world!(__XylemWorkflows with_types_in $crate::workflow_bindings);
    };
}

/// Exports a plugin whose tasks are returned by the function `$tasks`
/// (a `fn() -> Vec<Task>`). Use it once per plugin crate.
#[macro_export]
macro_rules! export_plugin {
    ($tasks:path) => {
        #[doc(hidden)]
        struct __XylemPlugin;

        impl $crate::bindings::exports::xylem::task::handler::Guest for __XylemPlugin {
            fn describe() -> ::std::vec::Vec<$crate::bindings::xylem::task::types::TaskSpec> {
                $crate::__private::describe(&$tasks())
            }

            fn run(
                info: $crate::bindings::xylem::task::types::TaskInfo,
                args: ::std::string::String,
            ) -> ::std::result::Result<
                ::std::string::String,
                $crate::bindings::xylem::task::types::TaskError,
            > {
                $crate::__private::run(&$tasks(), info, &args)
            }
        }

        $crate::bindings::__export_plugin_world!(__XylemPlugin with_types_in $crate::bindings);
    };
}

/// What [`export_plugin!`] expands to call; not part of the public API.
#[doc(hidden)]
pub mod __private {
    use crate::bindings::xylem::task::types as wit;
    use crate::{Context, Task, TaskError};

    pub fn describe(tasks: &[Task]) -> Vec<wit::TaskSpec> {
        tasks.iter().map(Task::to_spec).collect()
    }

    pub fn run(tasks: &[Task], info: wit::TaskInfo, args: &str) -> Result<String, wit::TaskError> {
        let Some(task) = tasks.iter().find(|t| t.name() == info.name) else {
            let known: Vec<&str> = tasks.iter().map(Task::name).collect();
            return Err(TaskError::reject(format!(
                "this plugin has no task named `{}` (it has: {})",
                info.name,
                known.join(", ")
            ))
            .into());
        };
        let ctx = Context::new(info);
        task.call(&ctx, args).map_err(Into::into)
    }
}
