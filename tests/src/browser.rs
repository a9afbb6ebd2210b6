//! Headless Chromium for the dashboard's end-to-end tests (`tests/tests/browser.rs`).
//!
//! [`Browser::start`] runs Debian's `chromedriver` on a free loopback port as a child (in its
//! own process group, killed with the Chromium it started when dropped) and opens one
//! WebDriver session on headless Chromium with a fresh profile. The helpers speak CSS
//! selectors from `docs/dashboard.md` and fail with what they were waiting for, the page's
//! address and a screenshot of the moment.
//!
//! Nothing here sleeps to pass time: every wait polls a condition against a deadline. Pages
//! are mostly read through small scripts (`querySelector(...)`), which cannot go stale the way
//! a held element can when a page updates itself.
//!
//! Screenshots go to `target/test-artifacts/browser/<test>/<nn>-<name>.png` (emptied when a
//! test starts), numbered in the order they were taken.
//!
//! Chromium and chromedriver missing: [`Browser::start`] fails under CI (`CI` set), naming the
//! packages; elsewhere it prints why and returns `None`, and the test returns early.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value as Json, json};

use crate::{Deadline, free_port, try_http};

/// The browser and its driver, looked up on `PATH` (Debian: `chromium`, `chromium-driver`).
pub const CHROMIUM: &str = "chromium";
pub const CHROMEDRIVER: &str = "chromedriver";

/// How long chromedriver may take to answer `/status`.
pub const DRIVER_START_DEADLINE: Duration = Duration::from_secs(20);
/// How long a page may take to show what a helper waits for, unless the caller says.
pub const WAIT_DEADLINE: Duration = Duration::from_secs(20);
/// How often the page is asked again while waiting.
pub const WAIT_STEP: Duration = Duration::from_millis(50);
/// The desktop window, in CSS pixels.
pub const DESKTOP_WIDTH: u32 = 1280;
pub const DESKTOP_HEIGHT: u32 = 900;
/// The phone the "readable on a phone" screenshots emulate (an iPhone 12–15 sized screen).
pub const PHONE_WIDTH: u32 = 390;
pub const PHONE_HEIGHT: u32 = 844;
pub const PHONE_PIXEL_RATIO: u32 = 2;

/// Why the browser tests cannot run here, if they cannot: a missing program.
pub fn missing_tools() -> Option<String> {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| find_program(p).is_none())
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "{} not found on PATH: `apt-get install -y chromium chromium-driver`",
            missing.join(" and ")
        )
    })
}

/// Whether the browser tests can run here; when not, fails under CI or prints why (see
/// [`cannot_run`]). Lets a test skip before it starts anything.
pub fn available() -> bool {
    match missing_tools() {
        Some(why) => {
            cannot_run(&why);
            false
        }
        None => true,
    }
}

/// `program` on `PATH`, if it is there and executable.
fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Fails under CI (`CI` set) naming what is missing; elsewhere prints why the caller skips.
pub fn cannot_run(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{why}; CI must run the browser tests (see .ci/run)");
    }
    eprintln!("SKIPPED: {why} (with CI=1 set this fails instead)");
}

/// The test video's picture: 720p at 25 frames per second, H.264 at [`VIDEO_BITS_PER_SEC`]
/// (a constant bitrate, so a position in time is close to the same fraction of the bytes).
pub const VIDEO_BITS_PER_SEC: u64 = 8_000_000;

/// Makes `dir/name` (an MP4 with its index at the front, `+faststart`, as a player streaming
/// it needs): `secs` seconds of ffmpeg's moving test pattern, H.264 (`yuv420p`, which every
/// browser decodes), a key frame every second so a seek lands near where it asked. `None`
/// (after [`cannot_run`]) when ffmpeg is not installed.
pub fn make_video(dir: &Path, name: &str, secs: u32) -> Option<PathBuf> {
    if find_program("ffmpeg").is_none() {
        cannot_run("ffmpeg not found on PATH: `apt-get install -y ffmpeg`");
        return None;
    }
    let path = dir.join(name);
    let rate = VIDEO_BITS_PER_SEC.to_string();
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-y", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=1280x720:rate=25")
        .args(["-t", &secs.to_string()])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"])
        .args(["-b:v", &rate, "-minrate", &rate, "-maxrate", &rate, "-bufsize", &rate])
        .args(["-g", "25", "-movflags", "+faststart"])
        .arg(&path)
        .output()
        .expect("running ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Some(path)
}

/// Where a test's screenshots go: `target/test-artifacts/browser/<test>/`.
pub fn artifacts_dir(test: &str) -> PathBuf {
    // The test executable is target/<profile>/deps/<name>-<hash>.
    let exe = std::env::current_exe().expect("current_exe");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test executable sits in target/<profile>/deps");
    target.join("test-artifacts").join("browser").join(test)
}

/// A `chromedriver` child in its own process group; the group (with the Chromium it started)
/// is killed on drop.
struct Driver {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Driver {
    fn start(dir: &Path) -> Driver {
        let log = dir.join("chromedriver.log");
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut cmd = Command::new(CHROMEDRIVER);
            cmd.arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(File::create(&log).expect("chromedriver log"))
                .stderr(Stdio::from(
                    fs::OpenOptions::new()
                        .append(true)
                        .open(&log)
                        .expect("chromedriver log"),
                ));
            {
                use std::os::unix::process::CommandExt;
                cmd.process_group(0);
            }
            let child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
            let mut driver = Driver {
                child,
                port,
                log: log.clone(),
            };
            let deadline = Deadline::after(DRIVER_START_DEADLINE);
            loop {
                if let Some(status) = driver.child.try_wait().expect("try_wait") {
                    // Most likely the port was taken between asking and binding: try another.
                    last = format!("chromedriver exited with {status}; log:\n{}", driver.log());
                    break;
                }
                if let Ok(a) = try_http("GET", &format!("{}/status", driver.url()), None, None)
                    && a.status == 200
                    && a.body.contains("\"ready\":true")
                {
                    return driver;
                }
                if deadline.expired() {
                    panic!(
                        "timed out waiting for chromedriver on port {port}; log:\n{}",
                        driver.log()
                    );
                }
                std::thread::sleep(WAIT_STEP);
            }
        }
        panic!("chromedriver did not start: {last}");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a negative pid signals the group this child leads (made with
        // process_group(0) and not yet reaped); it touches no memory.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Chrome DevTools command through chromedriver (`POST /session/{id}/goog/cdp/execute`).
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Json,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        let session = session_id.expect("a CDP command needs a session");
        base_url.join(&format!("session/{session}/goog/cdp/execute"))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "cmd": self.cmd, "params": self.params });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// One headless Chromium session on a Trove controller's web pages.
pub struct Browser {
    client: Client,
    base: String,
    artifacts: PathBuf,
    n_shots: u32,
    /// Logs whose ends a failure shows (see [`Browser::show_on_failure`]).
    logs: Vec<(String, PathBuf)>,
    // Dropped after the client: the driver's group is killed last.
    _driver: Driver,
    _dir: tempfile::TempDir,
}

impl Browser {
    /// A browser for test `test` on the site at `base` (`http://127.0.0.1:PORT`), or `None`
    /// (printed) when Chromium or chromedriver is not installed and `CI` is not set. Under
    /// CI a missing browser fails the test.
    pub async fn start(test: &str, base: &str) -> Option<Browser> {
        if !available() {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("trove-browser-")
            .tempdir()
            .expect("tempdir");
        let profile = dir.path().join("profile");
        fs::create_dir_all(&profile).expect("profile dir");
        let driver = Driver::start(dir.path());
        let args = [
            "--headless=new".to_owned(),
            // Chromium's sandbox needs user namespaces it does not get as root in a container.
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--window-size={DESKTOP_WIDTH},{DESKTOP_HEIGHT}"),
            "--autoplay-policy=no-user-gesture-required".to_owned(),
            "--mute-audio".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "args": args },
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!("a JSON object literal")
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver.url())
            .await
            .unwrap_or_else(|e| panic!("opening a Chromium session: {e}; chromedriver log:\n{}", driver.log()));
        let artifacts = artifacts_dir(test);
        match fs::remove_dir_all(&artifacts) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("emptying {}: {e}", artifacts.display()),
        }
        fs::create_dir_all(&artifacts).unwrap_or_else(|e| panic!("creating {}: {e}", artifacts.display()));
        Some(Browser {
            client,
            base: base.trim_end_matches('/').to_owned(),
            artifacts,
            n_shots: 0,
            logs: Vec::new(),
            _driver: driver,
            _dir: dir,
        })
    }

    /// The WebDriver client, for what the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `path` on the site (`/fleet` → `http://127.0.0.1:PORT/fleet`); absolute URLs unchanged.
    pub fn url(&self, path: &str) -> String {
        if path.contains("://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// Loads `path` (see [`Browser::url`]) and waits for the load event.
    pub async fn goto(&self, path: &str) {
        let url = self.url(path);
        self.client
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("loading {url}: {e}"));
    }

    /// The path (and query) of the page shown.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("current_url");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Runs `script` (a function body: `return ...`) with `args` (`arguments[i]`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Json>) -> Json {
        match self.client.execute(script, args).await {
            Ok(v) => v,
            Err(e) => panic!("running script {script:?} on {}: {e}", self.path().await),
        }
    }

    /// Polls `f` every [`WAIT_STEP`] until it returns `Some`; after `within`, saves a
    /// screenshot and panics naming `what` and the page.
    pub async fn wait_for<T>(&mut self, what: &str, within: Duration, mut f: impl AsyncFnMut(&Self) -> Option<T>) -> T {
        let deadline = Deadline::after(within);
        loop {
            if let Some(v) = f(self).await {
                return v;
            }
            if deadline.expired() {
                self.fail(&format!("timed out after {within:?} waiting for {what}"))
                    .await;
            }
            tokio::time::sleep(WAIT_STEP).await;
        }
    }

    /// Waits until the JavaScript expression `expr` is truthy (`arguments` are `args`), and
    /// returns its value.
    pub async fn wait_js(&mut self, what: &str, within: Duration, expr: &str, args: Vec<Json>) -> Json {
        let script = format!("return ({expr});");
        self.wait_for(what, within, async |b| {
            let v = b.js(&script, args.clone()).await;
            truthy(&v).then_some(v)
        })
        .await
    }

    /// Waits until an element matches `css`, and returns it.
    pub async fn find(&mut self, css: &str) -> Element {
        self.wait_for(&format!("an element {css:?}"), WAIT_DEADLINE, async |b| {
            b.client.find(Locator::Css(css)).await.ok()
        })
        .await
    }

    /// Every element matching `css` now (no waiting).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("finding {css:?}: {e}"))
    }

    /// How many elements match `css` now.
    pub async fn count(&self, css: &str) -> usize {
        let n = self
            .js(
                "return document.querySelectorAll(arguments[0]).length;",
                vec![json!(css)],
            )
            .await;
        n.as_u64().unwrap_or_else(|| panic!("count of {css:?}: {n}")) as usize
    }

    /// The text of the first element matching `css` as the page shows it (`innerText`,
    /// trimmed), waiting for one to exist.
    pub async fn text(&mut self, css: &str) -> String {
        self.find(css).await;
        self.text_now(css)
            .await
            .unwrap_or_else(|| panic!("{css:?} vanished while being read"))
    }

    /// The text of the first element matching `css`, if there is one now.
    pub async fn text_now(&self, css: &str) -> Option<String> {
        let v = self
            .js(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText.trim() : null;",
                vec![json!(css)],
            )
            .await;
        v.as_str().map(str::to_owned)
    }

    /// The texts of every element matching `css` now.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let v = self
            .js(
                "return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText.trim());",
                vec![json!(css)],
            )
            .await;
        serde_json::from_value(v).expect("an array of strings")
    }

    /// Waits until the first element matching `css` reads something `want` accepts, and
    /// returns that text.
    pub async fn wait_text(&mut self, css: &str, what: &str, want: impl Fn(&str) -> bool) -> String {
        self.wait_text_within(css, what, WAIT_DEADLINE, want).await
    }

    /// [`Browser::wait_text`] with a deadline of `within`.
    pub async fn wait_text_within(
        &mut self,
        css: &str,
        what: &str,
        within: Duration,
        want: impl Fn(&str) -> bool,
    ) -> String {
        self.wait_for(&format!("{css:?} to read {what}"), within, async |b| {
            b.text_now(css).await.filter(|t| want(t))
        })
        .await
    }

    /// Replaces the value of the form field matching `css` with `value` by typing it.
    pub async fn fill(&mut self, css: &str, value: &str) {
        let e = self.find(css).await;
        e.clear().await.unwrap_or_else(|err| panic!("clearing {css:?}: {err}"));
        e.send_keys(value)
            .await
            .unwrap_or_else(|err| panic!("typing into {css:?}: {err}"));
    }

    /// Selects the option with value `value` of the `select` matching `css`.
    pub async fn select(&mut self, css: &str, value: &str) {
        let e = self.find(css).await;
        e.select_by_value(value)
            .await
            .unwrap_or_else(|err| panic!("selecting {value:?} in {css:?}: {err}"));
    }

    /// Clicks the element matching `css` (waiting for it to exist).
    pub async fn click(&mut self, css: &str) {
        let e = self.find(css).await;
        e.click().await.unwrap_or_else(|err| panic!("clicking {css:?}: {err}"));
    }

    /// Submits the form matching `form` by clicking its submit button, as a person would.
    pub async fn submit(&mut self, form: &str) {
        let button = format!("{form} button[type=submit], {form} input[type=submit], {form} button:not([type])");
        self.click(&button).await;
    }

    /// Picks `file` in the `input[type=file]` matching `css` (chromedriver takes the path as
    /// typed keys).
    pub async fn upload(&mut self, css: &str, file: &Path) {
        let abs = fs::canonicalize(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let e = self.find(css).await;
        e.send_keys(abs.to_str().expect("a UTF-8 path"))
            .await
            .unwrap_or_else(|err| panic!("choosing {} in {css:?}: {err}", abs.display()));
    }

    /// Waits until the page's path satisfies `want`, and returns it.
    pub async fn wait_path(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        self.wait_for(&format!("the page to go to {what}"), WAIT_DEADLINE, async |b| {
            Some(b.path().await).filter(|p| want(p))
        })
        .await
    }

    /// Saves what the window shows as `<nn>-<name>.png`, and returns its path.
    pub async fn screenshot(&mut self, name: &str) -> PathBuf {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        self.n_shots += 1;
        let path = self.artifacts.join(format!("{:02}-{name}.png", self.n_shots));
        fs::write(&path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// Like [`Browser::screenshot`], but of the whole page: the window is made as tall as the
    /// document for the shot, then put back.
    pub async fn full_screenshot(&mut self, name: &str) -> PathBuf {
        let v = self
            .js(
                "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight];",
                vec![],
            )
            .await;
        let (Some(page), Some(chrome)) = (v[0].as_u64(), v[1].as_u64()) else {
            panic!("page height {v}")
        };
        let height = u32::try_from(page + chrome).expect("a page height in pixels");
        self.client
            .set_window_size(DESKTOP_WIDTH, height.max(DESKTOP_HEIGHT))
            .await
            .expect("growing the window");
        let path = self.screenshot(name).await;
        self.client
            .set_window_size(DESKTOP_WIDTH, DESKTOP_HEIGHT)
            .await
            .expect("restoring the window");
        path
    }

    /// A Chrome DevTools command.
    async fn cdp(&self, cmd: &'static str, params: Json) -> Json {
        self.client
            .issue_cmd(Cdp { cmd, params })
            .await
            .unwrap_or_else(|e| panic!("DevTools {cmd}: {e}"))
    }

    /// Reloads the page as a phone shows it ([`PHONE_WIDTH`] × [`PHONE_HEIGHT`], touch, the
    /// page's `meta viewport` honoured), waits for `ready_css`, checks that nothing is wider
    /// than the screen (no sideways scrolling), saves `<nn>-<name>-phone.png`, and goes back
    /// to the desktop window (reloaded).
    pub async fn phone_screenshot(&mut self, name: &str, ready_css: &str) -> PathBuf {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({
                "width": PHONE_WIDTH,
                "height": PHONE_HEIGHT,
                "deviceScaleFactor": PHONE_PIXEL_RATIO,
                "mobile": true,
            }),
        )
        .await;
        self.client.refresh().await.expect("reload as a phone");
        self.find(ready_css).await;
        let widths = self
            .js(
                "return [document.documentElement.scrollWidth, window.innerWidth];",
                vec![],
            )
            .await;
        let path = self.screenshot(&format!("{name}-phone")).await;
        let (scroll, inner) = (widths[0].as_u64(), widths[1].as_u64());
        self.cdp("Emulation.clearDeviceMetricsOverride", json!({})).await;
        self.client.refresh().await.expect("reload as a desktop");
        self.find(ready_css).await;
        let (Some(scroll), Some(inner)) = (scroll, inner) else {
            panic!("page widths {widths}")
        };
        assert!(
            scroll <= inner,
            "{name} on a {PHONE_WIDTH}px phone is {scroll}px wide (sideways scrolling); see {}",
            path.display()
        );
        path
    }

    /// Makes a failure show the end of the log at `path` (say, the controller's).
    pub fn show_on_failure(&mut self, name: &str, path: &Path) {
        self.logs.push((name.to_owned(), path.to_owned()));
    }

    /// Saves a screenshot of the moment and panics with `why`, the page, its text and the
    /// ends of the logs named with [`Browser::show_on_failure`].
    pub async fn fail(&mut self, why: &str) -> ! {
        let shot = self.screenshot("failure").await;
        let path = self.path().await;
        let body = self.text_now("body").await.unwrap_or_default();
        let mut logs = String::new();
        for (name, log) in &self.logs {
            let text = crate::strip_ansi(&fs::read_to_string(log).unwrap_or_default());
            logs.push_str(&format!("=== {name} ===\n{}\n", crate::tail(&text, 40)));
        }
        panic!(
            "{why}\npage: {path}\nscreenshot: {}\npage text:\n{}\n{logs}",
            shot.display(),
            crate::tail(&body, 40)
        );
    }

    /// Ends the session (Chromium quits); the driver is killed on drop.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// JavaScript's idea of truth for a JSON value a script returned.
fn truthy(v: &Json) -> bool {
    match v {
        Json::Null => false,
        Json::Bool(b) => *b,
        Json::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Json::String(s) => !s.is_empty(),
        Json::Array(_) | Json::Object(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthiness_follows_javascript() {
        for (v, want) in [
            (json!(null), false),
            (json!(false), false),
            (json!(0), false),
            (json!(0.0), false),
            (json!(""), false),
            (json!(true), true),
            (json!(3), true),
            (json!("x"), true),
            (json!([]), true),
            (json!({}), true),
        ] {
            assert_eq!(truthy(&v), want, "{v}");
        }
    }
}
