//! The dashboard in a real browser (issue 5): headless Chromium, driven through chromedriver,
//! against a real controller and real appliances, selecting on what `docs/dashboard.md`
//! promises. Each test saves screenshots of the pages it went through under
//! `target/test-artifacts/browser/<test>/`.
//!
//! Build the binaries first: `cargo build --workspace --bins`. Without Chromium, chromedriver
//! or ffmpeg these tests fail under CI (`CI` set) and are skipped, with a printed reason,
//! elsewhere. Every wait polls with a deadline; no test asserts on timing.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use trove_common::api::LoginResponse;
use trove_tests::browser::{self, Browser, WAIT_DEADLINE, make_video};
use trove_tests::*;

/// Appliances joining and announcing themselves online.
const ONLINE_DEADLINE: Duration = Duration::from_secs(45);
/// A browser upload of the test video: sent, hashed, stored on the appliances.
const UPLOAD_DEADLINE: Duration = Duration::from_secs(90);
/// The video starting, seeking and playing on through the gateway.
const PLAYBACK_DEADLINE: Duration = Duration::from_secs(30);
/// A killed appliance's Last Will reaching the fleet page.
const OFFLINE_DEADLINE: Duration = Duration::from_secs(30);
/// Seconds of test video: at [`browser::VIDEO_BITS_PER_SEC`] it spans many
/// chunks, so that what a browser buffers after the start and after the seek (bounded in
/// seconds by the player and in bytes by socket buffers and the gateway's read-ahead) leaves
/// most of the middle unfetched.
const VIDEO_SECS: u32 = 120;
/// Where the test seeks to, as a fraction of the video's duration.
const SEEK_FRACTION: f64 = 0.8;
/// The most of the file's chunks the gateway may fetch for the sharer's page preloading it and
/// the viewer's player loading, playing the start and then the end: it fetches only what the
/// browsers' ranges cover (and a bounded read-ahead), never the whole file.
const CHUNKS_FETCHED_FRACTION_MAX: f64 = 0.6;
const PASSWORD: &str = "correct horse battery";

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("trove-browser-test-")
        .tempdir()
        .expect("tempdir")
}

/// A controller with `n` appliances of its own, all online.
fn stack(n: usize) -> Stack {
    let s = Stack::start(StackKind::EmbeddedSqlite, Controller::builder(), n);
    s.wait_online(n, ONLINE_DEADLINE);
    s
}

/// A browser on the stack's controller whose failures show the controller's log; `None` when
/// the browser tests cannot run here (see [`Browser::start`]).
async fn open_browser(test: &str, s: &Stack) -> Option<Browser> {
    let mut b = Browser::start(test, s.controller.url()).await?;
    b.show_on_failure("controller", &s.controller.temp_dir().join("controller.log"));
    Some(b)
}

/// Signs `name` up through the sign-up page; the browser is then logged in as them.
async fn signup(b: &mut Browser, name: &str, display_name: &str) {
    b.goto("/signup").await;
    b.fill("#signup [name=name]", name).await;
    b.fill("#signup [name=password]", PASSWORD).await;
    b.fill("#signup [name=display_name]", display_name).await;
    b.screenshot("signup").await;
    b.submit("#signup").await;
    b.wait_path("/ after signing up", |p| p == "/").await;
    let nav = b.text("#nav").await;
    assert!(nav.contains(name), "the nav after signing up as {name} says {nav:?}");
}

/// Logs `name` in through the login page.
async fn login(b: &mut Browser, name: &str) {
    b.goto("/login").await;
    b.fill("#login [name=name]", name).await;
    b.fill("#login [name=password]", PASSWORD).await;
    b.submit("#login").await;
    b.wait_path("/ after logging in", |p| p == "/").await;
    let nav = b.text("#nav").await;
    assert!(nav.contains(name), "the nav after logging in as {name} says {nav:?}");
}

/// Logs out with the layout's logout form.
async fn logout(b: &mut Browser) {
    b.submit("#logout").await;
    b.wait_path("/login after logging out", |p| p.starts_with("/login"))
        .await;
}

/// Someone signed up through the API, sharing with the `trove` CLI.
struct ApiUser {
    token: String,
    config: tempfile::TempDir,
}

fn api_signup(s: &Stack, name: &str, display_name: &str) -> ApiUser {
    let body = json!({ "name": name, "password": PASSWORD, "display_name": display_name }).to_string();
    let a = http(
        "POST",
        &format!("{}/api/v1/signup", s.controller.url()),
        None,
        Some(&body),
    );
    assert!(
        (200..300).contains(&a.status),
        "signing up {name}: {} {}",
        a.status,
        a.body
    );
    let r: LoginResponse = a.json();
    ApiUser {
        token: r.token,
        config: tempdir(),
    }
}

/// What a share made with the CLI says.
struct Share<'a> {
    title: &'a str,
    description: &'a str,
    tags: &'a [&'a str],
    private: bool,
}

/// `trove share PATH --title T [--description D] [--tag ...] [--private] --wait --json` as
/// `user`; the file ID.
fn cli_share(s: &Stack, user: &ApiUser, path: &Path, share: &Share<'_>) -> String {
    let Share {
        title,
        description,
        tags,
        private,
    } = *share;
    let mut args = vec!["--title", title];
    if !description.is_empty() {
        args.extend(["--description", description]);
    }
    for t in tags {
        args.extend(["--tag", t]);
    }
    if private {
        args.push("--private");
    }
    s.share_as(&user.token, user.config.path(), path, &args)
}

/// The value of the unlabelled counter `name` on the controller's `/metrics`.
fn metric(s: &Stack, name: &str) -> u64 {
    let a = http("GET", &format!("{}/metrics", s.controller.url()), None, None);
    assert_eq!(a.status, 200, "GET /metrics: {}", a.body);
    let value = a
        .body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("/metrics has no {name}:\n{}", a.body));
    value
        .trim()
        .parse::<f64>()
        .unwrap_or_else(|e| panic!("{name} {value:?}: {e}")) as u64
}

/// Checks that no markup of a title became elements on the page, and none of its scripts ran
/// (an `onerror` handler runs by the time the load event has fired).
async fn no_script_ran(b: &mut Browser, page: &str) {
    b.wait_js(
        "the page to finish loading",
        Duration::from_secs(10),
        "document.readyState === 'complete'",
        vec![],
    )
    .await;
    let xss = b.js("return typeof window.__xss;", vec![]).await;
    assert_eq!(xss, json!("undefined"), "a script from the title ran on {page}");
    let injected = b.count("main script, img[src='x']").await;
    assert_eq!(injected, 0, "{page} holds elements made of the title's markup");
}

/// The status a script in the page gets from `fetch(path)` (with the browser's cache and
/// cookies, as a page's own requests go).
async fn fetch_status(b: &Browser, path: &str) -> u64 {
    let v = b
        .js("return fetch(arguments[0]).then(r => r.status);", vec![json!(path)])
        .await;
    v.as_u64().unwrap_or_else(|| panic!("fetch {path}: {v}"))
}

/// The HTTP status of the document the browser shows (Navigation Timing's `responseStatus`).
async fn page_status(b: &Browser) -> u64 {
    let v = b
        .js(
            "return performance.getEntriesByType('navigation')[0].responseStatus;",
            vec![],
        )
        .await;
    v.as_u64().unwrap_or_else(|| panic!("responseStatus {v}"))
}

// ---------------------------------------------------------------------------------------------

/// Pins the whole path of a video through the dashboard: signing up, sharing from the browser
/// with a progress bar, someone else finding it by tag and streaming it through the gateway
/// (Range requests, so a seek near the end does not fetch the middle), the view in their
/// history, and the view counted on the sharer's `/me` (which counts other people's views).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_find_play_seek_and_see_the_view_on_me() {
    if !browser::available() {
        return;
    }
    let s = stack(3);
    let dir = tempdir();
    let Some(video) = make_video(dir.path(), "test-pattern.mp4", VIDEO_SECS) else {
        return;
    };
    let Some(mut b) = open_browser("share_find_play", &s).await else {
        return;
    };
    let size = std::fs::metadata(&video).expect("video").len();
    let n_chunks = size.div_ceil(MIB);
    let title = "Test pattern in motion";
    let tag = "testcard";

    signup(&mut b, "vera", "Vera Video").await;
    // Counted from here: the gateway's cache of verified chunks is shared by everyone, so
    // what the sharer's player preloaded is not fetched again for the viewer.
    let fetched_before = metric(&s, "trove_gateway_chunks_fetched_total");

    // Share it; a recorder in the page keeps what the progress bar and the done link said
    // when the page leaves (sessionStorage survives the navigation to the file page).
    b.goto("/share").await;
    b.upload("#share input[type=file][name=file]", &video).await;
    b.fill("#share [name=title]", title).await;
    b.fill("#share [name=tags]", &format!("{tag} colour-bars")).await;
    b.js(
        "const p = document.getElementById('upload-progress');
         const done = document.getElementById('upload-done');
         const record = () => sessionStorage.setItem('share', JSON.stringify({
             value: p.value, max: p.max,
             done: done.hidden ? null : done.querySelector('a').getAttribute('href'),
         }));
         window.addEventListener('pagehide', record);
         return true;",
        vec![],
    )
    .await;
    b.submit("#share").await;
    b.screenshot("share-uploading").await;
    let file_path = b
        .wait_for("the page to go to /f/{id} after sharing", UPLOAD_DEADLINE, async |b| {
            Some(b.path().await).filter(|p| p.starts_with("/f/"))
        })
        .await;
    let file_id = file_path.trim_start_matches("/f/").to_owned();
    assert!(is_hex64(&file_id), "shared to {file_path}");
    assert_eq!(file_id, b3sum(&video), "the file page is the video's ID");
    let left = b
        .js("return JSON.parse(sessionStorage.getItem('share'));", vec![])
        .await;
    assert_eq!(
        left["value"], left["max"],
        "the progress bar when the share page left: {left}"
    );
    assert_eq!(
        left["done"],
        json!(file_path),
        "the done link when the share page left: {left}"
    );
    b.wait_text("h1#title", "the title", |t| t == title).await;
    b.screenshot("share-done-file-page").await;
    // Off the file page, so the sharer's player fetches nothing more.
    b.goto("/me").await;
    let sharer = b;

    // Someone else, on their own computer (their own browser and cache), finds it by tag
    // from the search page, and opens it.
    let Some(mut b) = open_browser("share_find_play_viewer", &s).await else {
        return;
    };
    signup(&mut b, "walt", "Walt Watcher").await;
    b.goto("/").await;
    // The tag field may sit among folded filters: unfold them as a person would.
    let tag_shown = b
        .js(
            "return document.querySelector('#search [name=tag]').checkVisibility();",
            vec![],
        )
        .await;
    if tag_shown != json!(true) {
        b.click("#search summary").await;
    }
    b.fill("#search [name=tag]", tag).await;
    b.submit("#search").await;
    b.wait_path("search results", |p| p.starts_with("/search")).await;
    b.wait_text("#results li.result a.title", "the video's title", |t| t == title)
        .await;
    let href = b
        .js(
            "return document.querySelector('#results li.result a.title').getAttribute('href');",
            vec![],
        )
        .await;
    assert_eq!(href, json!(file_path));
    b.screenshot("search").await;
    b.phone_screenshot("search", "#results li.result").await;
    b.click("#results li.result a.title").await;
    b.wait_path("the file page", |p| p == file_path).await;
    b.find("video#player").await;
    let src = b
        .js(
            "return document.querySelector('video#player').getAttribute('src');",
            vec![],
        )
        .await;
    assert_eq!(src, json!(format!("/api/v1/files/{file_id}/content")));

    // Play, then seek near the end; the gateway serves ranges from the chunks they cover.
    b.js(
        "const v = document.querySelector('video#player');
         window.__seeked = 0;
         v.addEventListener('seeked', () => { window.__seeked += 1; });
         v.muted = true;
         v.play();
         return true;",
        vec![],
    )
    .await;
    b.wait_js(
        "the video to play (currentTime > 0, readyState >= HAVE_FUTURE_DATA)",
        PLAYBACK_DEADLINE,
        "(v => v.currentTime > 0 && v.readyState >= 3 && !v.paused)(document.querySelector('video#player'))",
        vec![],
    )
    .await;
    let duration = b
        .js("return document.querySelector('video#player').duration;", vec![])
        .await
        .as_f64()
        .expect("a duration");
    assert!(
        (duration - f64::from(VIDEO_SECS)).abs() < 1.0,
        "the player says the video lasts {duration} s, it lasts {VIDEO_SECS} s"
    );
    b.js(
        "const v = document.querySelector('video#player'); v.currentTime = v.duration * arguments[0]; return true;",
        vec![json!(SEEK_FRACTION)],
    )
    .await;
    let landed = b
        .wait_js(
            "the seek to end (seeked fired, currentTime >= 0.79 × duration)",
            PLAYBACK_DEADLINE,
            "(v => window.__seeked >= 1 && !v.seeking && v.currentTime >= 0.79 * v.duration && v.currentTime)(document.querySelector('video#player'))",
            vec![],
        )
        .await
        .as_f64()
        .expect("currentTime");
    b.wait_js(
        "playback to advance from where it landed",
        PLAYBACK_DEADLINE,
        "(v => v.currentTime > arguments[0] + 0.5 && v.readyState >= 3)(document.querySelector('video#player'))",
        vec![json!(landed)],
    )
    .await;
    b.screenshot("file-playing").await;
    b.js("document.querySelector('video#player').pause(); return true;", vec![])
        .await;
    let fetched = metric(&s, "trove_gateway_chunks_fetched_total") - fetched_before;
    let fraction = fetched as f64 / n_chunks as f64;
    println!(
        "gateway fetched {fetched} of the video's {n_chunks} chunks ({:.0}%) for two people's players: loading, playing the start, seeking to {:.0}%",
        fraction * 100.0,
        SEEK_FRACTION * 100.0
    );
    assert!(
        fetched > 0,
        "the gateway counted no chunk fetched while the video played"
    );
    assert!(
        fraction < CHUNKS_FETCHED_FRACTION_MAX,
        "the gateway fetched {fetched} of {n_chunks} chunks to play the start and the end"
    );
    b.phone_screenshot("file", "video#player").await;

    // The viewer's history has the view; the sharer's dashboard counts it.
    b.goto("/me").await;
    b.wait_for("a view of the video in /me's history", WAIT_DEADLINE, async |b| {
        let what = b.texts("#my-history tr.event td.what").await;
        let titles = b.texts("#my-history tr.event td.title a").await;
        what.iter()
            .zip(&titles)
            .any(|(w, t)| w == "view" && t == title)
            .then_some(())
    })
    .await;
    b.screenshot("me-viewer").await;
    b.close().await;
    let mut b = sharer;
    b.goto("/me").await;
    let row = "#my-shares tr.share";
    b.wait_text(&format!("{row} td.title a"), "the video's title", |t| t == title)
        .await;
    let views = b.text(&format!("{row} td.views")).await;
    let views: u64 = views
        .parse()
        .unwrap_or_else(|e| panic!("td.views reads {views:?}: {e}"));
    assert!(
        views >= 1,
        "the sharer's /me counts {views} views of the video walt played"
    );
    b.full_screenshot("me").await;
    b.close().await;
}

/// Pins the fleet page's live feed: a killed appliance turns offline on the open page,
/// without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_page_shows_a_killed_appliance_offline_without_reloading() {
    if !browser::available() {
        return;
    }
    let mut s = stack(3);
    // Something on the appliances, so the page has chunks to count.
    let dir = tempdir();
    let path = dir.path().join("album.bin");
    random_file(&path, 6 * MIB, 3);
    let uploader = api_signup(&s, "ursula", "Ursula");
    let share = Share {
        title: "Holiday album",
        description: "",
        tags: &["photos"],
        private: false,
    };
    cli_share(&s, &uploader, &path, &share);
    let Some(mut b) = open_browser("fleet", &s).await else {
        return;
    };
    signup(&mut b, "frank", "Frank Fleet").await;
    b.goto("/fleet").await;
    let ids: Vec<String> = s.nodes.iter().map(|n| n.node_id().to_string()).collect();
    for id in &ids {
        b.wait_text(
            &format!("#fleet tr.node[data-node-id=\"{id}\"] td.state"),
            "online",
            |t| t == "online",
        )
        .await;
    }
    assert_eq!(b.count("#fleet tr.node").await, 3);
    b.screenshot("fleet-online").await;

    // A marker on the page: a reload would lose it.
    b.js("window.__trove_no_reload = 'still here'; return true;", vec![])
        .await;
    let victim = &ids[1];
    s.nodes[1].kill();
    b.wait_text_within(
        &format!("#fleet tr.node[data-node-id=\"{victim}\"] td.state"),
        "offline",
        OFFLINE_DEADLINE,
        |t| t == "offline",
    )
    .await;
    let marker = b.js("return window.__trove_no_reload;", vec![]).await;
    assert_eq!(
        marker,
        json!("still here"),
        "the fleet page reloaded instead of updating"
    );
    for id in [&ids[0], &ids[2]] {
        let state = b.text(&format!("#fleet tr.node[data-node-id=\"{id}\"] td.state")).await;
        assert_eq!(state, "online", "appliance {id} after another was killed");
    }
    b.full_screenshot("fleet-one-offline").await;
    b.close().await;
}

/// Pins that what people type is shown as text, never run: a title, a description and a
/// display name made of markup appear literally in search results, on the file page and on
/// the profile, and no script of them runs. And that someone else's private file is a 404,
/// as a page and through the gateway, also in a browser its sharer used before logging out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn titles_are_text_and_private_files_are_not_found() {
    if !browser::available() {
        return;
    }
    let s = stack(3);
    let dir = tempdir();
    let display_name = r#"<img src=x onerror="window.__xss=3">"#;
    let mallory = api_signup(&s, "mallory", display_name);
    let title = r#"<script>window.__xss=1</script><img src=x onerror="window.__xss=2">"#;
    let description = r#"</p><script>window.__xss=4</script>"#;
    let public = dir.path().join("public.bin");
    random_file(&public, 64 << 10, 1);
    let public_id = cli_share(
        &s,
        &mallory,
        &public,
        &Share {
            title,
            description,
            tags: &["markup"],
            private: false,
        },
    );
    let secret = dir.path().join("secret.bin");
    random_file(&secret, 64 << 10, 2);
    let secret_id = cli_share(
        &s,
        &mallory,
        &secret,
        &Share {
            title: "Mallory's diary",
            description: "private",
            tags: &["markup"],
            private: true,
        },
    );

    let Some(mut b) = open_browser("titles_and_privacy", &s).await else {
        return;
    };
    // Mallory looks at her private file in this browser first, then logs out: what the
    // browser kept of it must not reach the next person on the same computer.
    let content = format!("/api/v1/files/{secret_id}/content");
    login(&mut b, "mallory").await;
    b.goto(&format!("/f/{secret_id}")).await;
    b.wait_text("h1#title", "the private file's title", |t| t == "Mallory's diary")
        .await;
    assert_eq!(fetch_status(&b, &content).await, 200, "mallory fetching her own file");
    logout(&mut b).await;
    signup(&mut b, "victor", "Victor Viewer").await;

    b.goto("/search?tag=markup").await;
    b.wait_text("#results li.result a.title", "the title, literally", |t| t == title)
        .await;
    assert_eq!(b.count("#results li.result").await, 1, "only the public file is found");
    no_script_ran(&mut b, "the search results").await;
    b.screenshot("search-markup-title").await;

    b.goto(&format!("/f/{public_id}")).await;
    b.wait_text("h1#title", "the title, literally", |t| t == title).await;
    let shown = b.text(".description").await;
    assert_eq!(shown, description, "the description, literally");
    no_script_ran(&mut b, "the file page").await;
    b.screenshot("file-markup-title").await;

    b.goto("/u/mallory").await;
    b.wait_text("#display-name", "the display name, literally", |t| t == display_name)
        .await;
    no_script_ran(&mut b, "mallory's profile").await;
    b.screenshot("profile-markup-name").await;

    // Someone else's private file: not found, as a page and as content.
    b.goto(&format!("/f/{secret_id}")).await;
    assert_eq!(page_status(&b).await, 404, "victor opening mallory's private file page");
    assert!(
        b.find_all("h1#title").await.is_empty(),
        "a 404 page shows no file title"
    );
    let text = b.text("main").await;
    assert!(
        !text.contains("diary"),
        "the 404 page tells the private title: {text:?}"
    );
    b.screenshot("private-file-404").await;
    assert_eq!(
        fetch_status(&b, &content).await,
        404,
        "victor fetching mallory's private file's content after she logged out of this browser"
    );
    b.goto(&content).await;
    assert_eq!(
        page_status(&b).await,
        404,
        "victor fetching mallory's private file's content"
    );
    // Its sharer can fetch it (the 404 is about who asks).
    let url = format!("{}{content}", s.controller.url());
    assert_eq!(http("GET", &url, Some(&mallory.token), None).status, 200);
    b.close().await;
}
