//! The `textstats` example plugin: statistics over a text document.
//!
//! `text.stats` `{"text": "...", "top": 10}` → word, line, sentence and
//! character counts, the most frequent words and the average word length,
//! reporting progress as it goes and stopping early when cancelled.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use xylem_guest::{Context, Task, TaskError, TaskResult};

#[derive(Deserialize)]
struct StatsArgs {
    text: String,
    /// How many of the most frequent words to return.
    #[serde(default = "default_top")]
    top: usize,
}

fn default_top() -> usize {
    10
}

#[derive(Serialize)]
struct WordCount {
    word: String,
    count: u64,
}

#[derive(Serialize)]
struct Stats {
    characters: u64,
    words: u64,
    unique_words: u64,
    lines: u64,
    sentences: u64,
    average_word_length: f64,
    top_words: Vec<WordCount>,
}

/// Lines are processed in chunks so progress can be reported between them.
const CHUNK_LINES: usize = 200;

fn stats(ctx: &Context, args: StatsArgs) -> TaskResult<Stats> {
    let lines: Vec<&str> = args.text.lines().collect();
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut words = 0u64;
    let mut word_chars = 0u64;
    let chunks = lines.len().div_ceil(CHUNK_LINES).max(1);

    for (i, chunk) in lines.chunks(CHUNK_LINES).enumerate() {
        if ctx.cancelled() {
            return Err(TaskError::fail(format!(
                "cancelled after {} of {} lines",
                i * CHUNK_LINES,
                lines.len()
            )));
        }
        for line in chunk {
            for raw in line.split_whitespace() {
                let word: String = raw
                    .chars()
                    .filter(|c| c.is_alphanumeric() || *c == '\'')
                    .flat_map(char::to_lowercase)
                    .collect();
                if word.is_empty() {
                    continue;
                }
                words += 1;
                word_chars += word.chars().count() as u64;
                *counts.entry(word).or_default() += 1;
            }
        }
        let percent = (i + 1) as f32 * 100.0 / chunks as f32;
        ctx.progress(percent, Some(&format!("{} words so far", words)));
        ctx.heartbeat();
    }

    let mut top: Vec<WordCount> = counts
        .iter()
        .map(|(word, count)| WordCount {
            word: word.clone(),
            count: *count,
        })
        .collect();
    // Most frequent first; ties alphabetically so the result is stable.
    top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.word.cmp(&b.word)));
    top.truncate(args.top);

    Ok(Stats {
        characters: args.text.chars().count() as u64,
        words,
        unique_words: counts.len() as u64,
        lines: lines.len() as u64,
        sentences: args
            .text
            .split(['.', '!', '?'])
            .filter(|s| s.chars().any(char::is_alphanumeric))
            .count() as u64,
        average_word_length: if words == 0 {
            0.0
        } else {
            word_chars as f64 / words as f64
        },
        top_words: top,
    })
}

fn tasks() -> Vec<Task> {
    vec![
        Task::new("text.stats", stats)
            .description("Word, line and sentence counts and the most frequent words of `text`")
            .max_retries(2)
            .soft_time_limit(Duration::from_secs(20))
            .hard_time_limit(Duration::from_secs(30))
            .max_memory(256 * 1024 * 1024),
    ]
}

xylem_guest::export_plugin!(tasks);
