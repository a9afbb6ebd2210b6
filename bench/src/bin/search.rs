//! Search benchmark: latency of `GET /api/v1/search` (median and 99th percentile) with
//! availability ranking on, over 100,000 and 1,000,000 files on SQLite.
//!
//! It starts the real `trove-controller` (SQLite, no appliances) and, while it runs, fills
//! its database directly (the schema is the controller's own migrations): users, files, and
//! one share per file with a title of three words from a 3,000-word vocabulary (picked with
//! a skew, like real titles), a kind, two of 200 tags, 5% private. A file's availability is
//! drawn as 3, 2, 1 or 0 live holders (80/10/5/5%): the controller keeps that column from
//! holdings in real fleets; here the bench measures the query path, not that upkeep. The
//! triggers of migration 0003 copy it into the shares and tags that search ranks by, as they
//! do for the controller's own inserts. Then it times a seeded mix of queries through the
//! HTTP API, one at a time, as a user would send them: one word, two words, a word and a
//! kind, a tag, a word and a tag.
//!
//! Usage: bench-search [SIZES=100000,1000000] [QUERIES=1000]

use std::time::Instant;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use trove_common::api::SearchResults;
use trove_tests::{Controller, TestRng, http};

const WORDS: usize = 3000;
const TAGS: usize = 200;
const USERS: usize = 50;
const KINDS: [&str; 7] = ["video", "audio", "image", "document", "archive", "software", "other"];
const ROWS_PER_INSERT: usize = 500;

fn main() -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    if std::env::var_os("TROVE_BIN_DIR").is_none() {
        // SAFETY: set before any thread starts.
        unsafe { std::env::set_var("TROVE_BIN_DIR", exe.parent().expect("exe has a parent")) };
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sizes: Vec<usize> = args
        .first()
        .map_or("100000,1000000", String::as_str)
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let n_queries: usize = args.get(1).map_or(Ok(1000), |s| s.parse())?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let words = vocabulary(WORDS, 1);
    let tags = vocabulary(TAGS, 2);
    let mut report = Vec::new();
    for &n in &sizes {
        let ctl = Controller::builder().start();
        let started = Instant::now();
        rt.block_on(fill(&ctl, n, &words, &tags))?;
        eprintln!("{n} files inserted in {:.1} s", started.elapsed().as_secs_f64());
        report.push((n, measure(&ctl, n_queries, &words, &tags)));
    }
    println!("\nsearch latency, SQLite, availability ranking on, {n_queries} queries per size");
    println!(
        "{:>10}  {:<12} {:>9} {:>9} {:>9}",
        "files", "query", "median", "p99", "max"
    );
    for (n, classes) in report {
        for (class, mut ms) in classes {
            ms.sort_by(f64::total_cmp);
            let q = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
            println!(
                "{n:>10}  {class:<12} {:>6.2} ms {:>6.2} ms {:>6.2} ms",
                q(0.5),
                q(0.99),
                ms[ms.len() - 1]
            );
        }
    }
    Ok(())
}

/// Pronounceable made-up words, distinct.
fn vocabulary(n: usize, seed: u64) -> Vec<String> {
    const C: &[u8] = b"bcdfghjklmnprstvz";
    const V: &[u8] = b"aeiou";
    let mut rng = TestRng::new(seed);
    let mut out: Vec<String> = Vec::with_capacity(n);
    while out.len() < n {
        let syllables = 2 + rng.next_u64() % 3;
        let w: String = (0..syllables)
            .flat_map(|_| {
                [
                    C[(rng.next_u64() % C.len() as u64) as usize] as char,
                    V[(rng.next_u64() % V.len() as u64) as usize] as char,
                ]
            })
            .collect();
        if !out.contains(&w) {
            out.push(w);
        }
    }
    out
}

/// An index into `n` things, skewed toward the front (a few words are common).
fn skewed(rng: &mut TestRng, n: usize) -> usize {
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    ((u * u) * n as f64) as usize
}

async fn fill(ctl: &Controller, n: usize, words: &[String], tags: &[String]) -> anyhow::Result<()> {
    let db = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(ctl.data_dir().join("trove.db"))
                .busy_timeout(std::time::Duration::from_secs(30)),
        )
        .await?;
    let mut tx = db.begin().await?;
    let first_user: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM users")
        .fetch_one(&mut *tx)
        .await?;
    for u in 0..USERS {
        sqlx::query("INSERT INTO users (id, name, display_name, is_admin, created_at) VALUES (?, ?, ?, 0, 0)")
            .bind(first_user + u as i64)
            .bind(format!("user{u}"))
            .bind(format!("User {u}"))
            .execute(&mut *tx)
            .await?;
    }
    let mut rng = TestRng::new(42);
    let mut start = 0;
    while start < n {
        let k = ROWS_PER_INSERT.min(n - start);
        let mut files =
            sqlx::QueryBuilder::new("INSERT INTO files (id, size, chunk_bytes, manifest, created_at, availability) ");
        let mut shares = sqlx::QueryBuilder::new(
            "INSERT INTO shares (id, file_id, user_id, name, created_at, title, kind, description, tags, private, search_text) ",
        );
        let mut share_tags = sqlx::QueryBuilder::new("INSERT INTO share_tags (tag, share_id) ");
        let mut rows = Vec::with_capacity(k);
        for i in start..start + k {
            let mut id = [0u8; 32];
            rng.fill(&mut id);
            let title: Vec<&str> = (0..3).map(|_| words[skewed(&mut rng, words.len())].as_str()).collect();
            let a = tags[skewed(&mut rng, tags.len())].clone();
            let mut b = a.clone();
            while b == a {
                b = tags[skewed(&mut rng, tags.len())].clone();
            }
            let availability = match rng.next_u64() % 20 {
                0 => 0,
                1 => 1,
                2 | 3 => 2,
                _ => 3,
            };
            rows.push((
                i as i64 + 1,
                id.to_vec(),
                title.join(" "),
                KINDS[(rng.next_u64() % 7) as usize],
                [a, b],
                availability,
                rng.next_u64().is_multiple_of(20),
                first_user + (rng.next_u64() % USERS as u64) as i64,
                (rng.next_u64() % 100_000_000) as i64,
            ));
        }
        files.push_values(&rows, |mut r, row| {
            r.push_bind(row.1.clone())
                .push_bind(row.8)
                .push_bind(1i64 << 20)
                .push_bind(Vec::<u8>::new())
                .push_bind(row.0)
                .push_bind(row.5);
        });
        shares.push_values(&rows, |mut r, row| {
            let [a, b] = &row.4;
            r.push_bind(row.0)
                .push_bind(row.1.clone())
                .push_bind(row.7)
                .push_bind(format!("{}.bin", row.2.replace(' ', "-")))
                .push_bind(row.0)
                .push_bind(row.2.clone())
                .push_bind(row.3)
                .push_bind("")
                .push_bind(format!("{a} {b}"))
                .push_bind(row.6 as i64)
                .push_bind(format!("{} {a} {b}", row.2));
        });
        share_tags.push_values(
            rows.iter().flat_map(|r| r.4.iter().map(move |t| (t, r.0))),
            |mut r, (t, id)| {
                r.push_bind(t.clone()).push_bind(id);
            },
        );
        files.build().execute(&mut *tx).await?;
        shares.build().execute(&mut *tx).await?;
        share_tags.build().execute(&mut *tx).await?;
        start += k;
    }
    tx.commit().await?;
    db.close().await;
    Ok(())
}

/// Latencies in milliseconds per query class.
fn measure(ctl: &Controller, n: usize, words: &[String], tags: &[String]) -> Vec<(&'static str, Vec<f64>)> {
    let token = ctl.admin_token();
    let mut rng = TestRng::new(7);
    let mut classes: Vec<(&'static str, Vec<f64>)> = ["all", "1 word", "2 words", "word+kind", "tag", "word+tag"]
        .into_iter()
        .map(|c| (c, Vec::new()))
        .collect();
    let word = |rng: &mut TestRng| words[skewed(rng, words.len())].clone();
    // Warm the caches as a running controller's would be.
    for _ in 0..50 {
        let w = word(&mut rng);
        http("GET", &format!("{}/api/v1/search?q={w}", ctl.url()), Some(&token), None);
    }
    let mut hits = 0u64;
    for _ in 0..n {
        let (class, query) = match rng.next_u64() % 20 {
            0..=7 => (1, format!("q={}", word(&mut rng))),
            8..=12 => (2, format!("q={}+{}", word(&mut rng), word(&mut rng))),
            13..=15 => (
                3,
                format!("q={}&kind={}", word(&mut rng), KINDS[(rng.next_u64() % 7) as usize]),
            ),
            16..=17 => (4, format!("tag={}", tags[skewed(&mut rng, tags.len())])),
            _ => (
                5,
                format!("q={}&tag={}", word(&mut rng), tags[skewed(&mut rng, tags.len())]),
            ),
        };
        let started = Instant::now();
        let a = http(
            "GET",
            &format!("{}/api/v1/search?{query}", ctl.url()),
            Some(&token),
            None,
        );
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(a.status, 200, "{query}: {}", a.body);
        hits += a.json::<SearchResults>().total;
        classes[0].1.push(ms);
        classes[class].1.push(ms);
    }
    eprintln!("{:.0} matches per query on average", hits as f64 / n.max(1) as f64);
    classes
}
