//! A hostile fixture that attacks before any task runs: its `describe()`
//! never returns. `xylem plugin push`, `plugin inspect` and a worker's load
//! must refuse it within the describe limits (time, fuel, memory), never
//! hang. (Its list of tasks is what it would declare if it ever stopped.)

use xylem_guest::Task;

fn tasks() -> Vec<Task> {
    let mut spins: u64 = 0;
    loop {
        spins = std::hint::black_box(spins.wrapping_add(1));
        if spins == u64::MAX {
            break;
        }
    }
    Vec::new()
}

xylem_guest::export_plugin!(tasks);
