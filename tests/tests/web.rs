//! The dashboard's pages over real HTTP (issue 5), against a real controller with three real
//! appliances: accounts through forms and cookies, CSRF and cross-origin refusals, HTML
//! escaping of what people type, the file page and privacy, uploads from the browser (bytes
//! checked with the real `trove` CLI and `b3sum`), bad uploads, and the `/me` counts.
//! Element IDs and classes are those of `docs/dashboard.md`.
//!
//! Build the binaries first: `cargo build --workspace --bins`. Every wait polls with a
//! deadline; no test asserts on timing.

use std::time::Duration;

use trove_common::api::{LoginResponse, SearchResults, TokenView};
use trove_tests::*;

const ONLINE_DEADLINE: Duration = Duration::from_secs(45);
const AVAILABILITY_DEADLINE: Duration = Duration::from_secs(60);
const PASSWORD: &str = "correct horse battery";
const XSS: &str = "<script>alert(1)</script>";
const XSS_ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt;";

fn start() -> Stack {
    let s = Stack::start(StackKind::EmbeddedSqlite, Controller::builder().grace_secs(2), 3);
    s.wait_online(3, ONLINE_DEADLINE);
    s
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("trove-web-")
        .tempdir()
        .expect("tempdir")
}

fn url(s: &Stack) -> String {
    s.controller.url().to_string()
}

/// Signs `name` up through the sign-up form; the browser now holds their session.
fn signup_form(s: &Stack, name: &str) -> WebClient {
    let mut b = WebClient::new(&url(s));
    let page = b.get("/signup");
    assert_eq!(page.status, 200, "{}", page.text());
    let csrf = html_input_value(&page.text(), "csrf").expect("the sign-up form has a csrf field");
    let r = b.post_form(
        "/signup",
        &[
            ("csrf", &csrf),
            ("name", name),
            ("password", PASSWORD),
            ("display_name", ""),
        ],
    );
    assert_eq!(r.status, 303, "sign-up: {}", r.text());
    assert_eq!(r.header("location"), Some("/"));
    assert!(b.cookie("trove_session").is_some(), "signed up and logged in");
    b
}

/// The page's CSRF token (the `csrf-token` meta tag every logged-in page carries).
fn csrf_of(b: &mut WebClient) -> String {
    let page = b.get("/profile");
    assert_eq!(page.status, 200, "{}", page.text());
    let t = html_input_value(&page.text(), "csrf-token").expect("the layout has the CSRF meta tag");
    assert!(!t.is_empty());
    t
}

/// The API as `token` sees a search.
fn api_search(s: &Stack, token: &str, query: &str) -> SearchResults {
    let a = http("GET", &format!("{}/api/v1/search?{query}", url(s)), Some(token), None);
    assert_eq!(a.status, 200, "{}", a.body);
    a.json()
}

/// The session token in a browser: an ordinary API token.
fn token_of(b: &WebClient) -> String {
    b.cookie("trove_session").expect("logged in").to_owned()
}

/// Uploads `bytes` as the share page's script does.
fn upload(b: &mut WebClient, csrf: Option<&str>, query: &[(&str, &str)], bytes: &[u8]) -> WebAnswer {
    let path = format!("/share/upload?{}", form_encode(query));
    let mut headers = vec![("Content-Type", "application/octet-stream")];
    if let Some(t) = csrf {
        headers.push(("X-CSRF-Token", t));
    }
    b.request("POST", &path, &headers, bytes)
}

/// The text inside the first element of `html` whose opening tag contains `marker`
/// (say `class="downloaders"`), up to its next tag.
fn text_after(html: &str, marker: &str) -> Option<String> {
    let at = html.find(marker)?;
    let start = at + html[at..].find('>')? + 1;
    Some(html[start..].split('<').next()?.trim().to_owned())
}

#[test]
fn accounts_through_forms_with_safe_cookies_and_csrf_everywhere() {
    let s = start();
    let base = url(&s);

    // Nobody logged in: pages send the browser to the login page and back.
    let mut anon = WebClient::new(&base);
    let r = anon.get("/me");
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/login?next=%2Fme"));

    // The sign-up form sets the pre-session cookie; without its token nothing happens.
    let page = anon.get("/signup");
    assert_eq!(page.status, 200);
    let pre = page.set_cookie("trove_pre").expect("a pre-session cookie").to_owned();
    assert!(pre.contains("HttpOnly") && pre.contains("SameSite=Lax"), "{pre}");
    assert!(
        page.header("content-security-policy")
            .is_some_and(|c| c.contains("default-src 'self'"))
    );
    let csrf = html_input_value(&page.text(), "csrf").unwrap();
    assert_eq!(Some(csrf.as_str()), anon.cookie("trove_pre"));
    for bad in [None, Some("0123456789abcdef0123456789abcdef")] {
        let mut fields = vec![("name", "mallory"), ("password", PASSWORD)];
        if let Some(b) = bad {
            fields.push(("csrf", b));
        }
        let r = anon.post_form("/signup", &fields);
        assert_eq!(r.status, 403, "sign-up with csrf {bad:?}: {}", r.text());
        assert!(anon.cookie("trove_session").is_none());
    }
    // A foreign site cannot set the cookie, only post the form: a token without the cookie.
    let mut foreign = WebClient::new(&base);
    let r = foreign.post_form(
        "/signup",
        &[("csrf", &csrf), ("name", "mallory"), ("password", PASSWORD)],
    );
    assert_eq!(r.status, 403);
    let login = http(
        "POST",
        &format!("{base}/api/v1/login"),
        None,
        Some(&format!(r#"{{"name":"mallory","password":"{PASSWORD}"}}"#)),
    );
    assert_eq!(login.status, 401, "refused sign-ups created no account: {}", login.body);

    // Sign up: a session cookie that scripts cannot read and other sites do not send.
    let r = anon.post_form(
        "/signup",
        &[
            ("csrf", &csrf),
            ("name", "alice"),
            ("password", PASSWORD),
            ("display_name", "Alice A."),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let cookie = r.set_cookie("trove_session").expect("a session cookie").to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    let mut alice = anon;
    let home = alice.get("/");
    assert_eq!(home.status, 200);
    assert!(home.text().contains("id=\"search\"") && home.text().contains("id=\"logout\""));

    // A taken name is the form again with its error.
    let mut other = WebClient::new(&base);
    let page = other.get("/signup");
    let csrf2 = html_input_value(&page.text(), "csrf").unwrap();
    let r = other.post_form(
        "/signup",
        &[("csrf", &csrf2), ("name", "alice"), ("password", PASSWORD)],
    );
    assert_eq!(r.status, 409);
    assert!(
        r.text().contains("class=\"error\"") && r.text().contains("taken"),
        "{}",
        r.text()
    );

    // The profile form: refused without the session's CSRF token or from another origin.
    let token = csrf_of(&mut alice);
    let r = alice.post_form("/profile", &[("display_name", "Hacked"), ("bio", "pwned")]);
    assert_eq!(r.status, 403);
    let r = alice.post_form(
        "/profile",
        &[("csrf", "0000"), ("display_name", "Hacked"), ("bio", "pwned")],
    );
    assert_eq!(r.status, 403);
    let r = alice.request(
        "POST",
        "/profile",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", "http://evil.example"),
        ],
        form_encode(&[("csrf", &token), ("display_name", "Hacked"), ("bio", "pwned")]).as_bytes(),
    );
    assert_eq!(r.status, 403, "a cross-origin POST is refused even with the token");
    let public = alice.get("/u/alice").text();
    assert!(
        !public.contains("Hacked") && !public.contains("pwned"),
        "nothing changed"
    );
    assert!(text_after(&public, "id=\"display-name\"").is_some_and(|t| t == "Alice A."));

    // With the token: saved, shown escaped.
    let bio = format!("I like {XSS} & films");
    let r = alice.post_form(
        "/profile",
        &[("csrf", &token), ("display_name", "Alice"), ("bio", &bio)],
    );
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), Some("/u/alice"));
    let public = alice.get("/u/alice").text();
    assert_eq!(text_after(&public, "id=\"display-name\"").as_deref(), Some("Alice"));
    assert!(public.contains(XSS_ESCAPED) && !public.contains(XSS), "{public}");
    assert!(public.contains("&amp; films"));

    // Log out: refused without the token; with it the token is revoked and the cookie gone.
    let session = token_of(&alice);
    let r = alice.post_form("/logout", &[]);
    assert_eq!(r.status, 403);
    assert_eq!(
        http("GET", &format!("{base}/api/v1/me"), Some(&session), None).status,
        200
    );
    let r = alice.post_form("/logout", &[("csrf", &token)]);
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/login"));
    assert!(r.set_cookie("trove_session").is_some_and(|c| c.contains("Max-Age=0")));
    assert!(alice.cookie("trove_session").is_none());
    assert_eq!(
        http("GET", &format!("{base}/api/v1/me"), Some(&session), None).status,
        401,
        "the session's token is revoked"
    );
    assert_eq!(alice.get("/me").status, 303);
    // Logging out again with the dead cookie (another tab, an old bookmark): it is forgotten,
    // no token needed, and the browser lands on the login page, not an error.
    let r = alice.request(
        "POST",
        "/logout",
        &[("cookie", &format!("trove_session={session}"))],
        b"",
    );
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), Some("/login"));
    assert!(r.set_cookie("trove_session").is_some_and(|c| c.contains("Max-Age=0")));

    // Log in: the pre-session token again; a wrong password is the form with its error.
    let page = alice.get("/login?next=%2Fme");
    assert_eq!(page.status, 200);
    let csrf = html_input_value(&page.text(), "csrf").unwrap();
    assert_eq!(html_input_value(&page.text(), "next").as_deref(), Some("/me"));
    let r = alice.post_form("/login", &[("name", "alice"), ("password", PASSWORD), ("next", "/me")]);
    assert_eq!(r.status, 403, "login without its CSRF token");
    assert!(alice.cookie("trove_session").is_none());
    let r = alice.post_form(
        "/login",
        &[
            ("csrf", &csrf),
            ("name", "alice"),
            ("password", "wrong password"),
            ("next", "/me"),
        ],
    );
    assert_eq!(r.status, 401);
    assert!(r.text().contains("class=\"error\""));
    assert!(alice.cookie("trove_session").is_none());
    let r = alice.post_form(
        "/login",
        &[
            ("csrf", &csrf),
            ("name", "alice"),
            ("password", PASSWORD),
            ("next", "/me"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), Some("/me"));
    assert!(
        r.set_cookie("trove_session")
            .is_some_and(|c| c.contains("HttpOnly") && c.contains("SameSite=Lax"))
    );
    assert_eq!(alice.get("/me").status, 200);

    // `next` never leads off the site.
    let mut b = WebClient::new(&base);
    let page = b.get("/login");
    let csrf = html_input_value(&page.text(), "csrf").unwrap();
    let r = b.post_form(
        "/login",
        &[
            ("csrf", &csrf),
            ("name", "alice"),
            ("password", PASSWORD),
            ("next", "//evil.example/"),
        ],
    );
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/"));

    // Failed logins are rate limited like the API's (same limiter): a 429 page.
    let mut m = WebClient::new(&base);
    let page = m.get("/login");
    let csrf = html_input_value(&page.text(), "csrf").unwrap();
    let statuses: Vec<u16> = (0..8)
        .map(|_| {
            m.post_form(
                "/login",
                &[("csrf", &csrf), ("name", "bob-nobody"), ("password", "guess1234")],
            )
            .status
        })
        .collect();
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429), "{statuses:?}");
}

#[test]
fn uploads_file_pages_search_privacy_and_my_dashboard() {
    let s = start();
    let base = url(&s);
    let dir = tempdir();
    let mut alice = signup_form(&s, "alice");
    let mut bob = signup_form(&s, "bob");
    let alice_token = token_of(&alice);
    let bob_token = token_of(&bob);
    let csrf = csrf_of(&mut alice);

    // A file of three chunks and a bit, uploaded as the share page's script would.
    let path = dir.path().join("holiday.mp4");
    random_file(&path, (3 << 20) + 12_345, 42);
    let bytes = std::fs::read(&path).unwrap();
    let want_id = b3sum(&path);
    let meta = [
        ("name", "holiday.mp4"),
        ("title", XSS),
        ("kind", "auto"),
        ("tags", "beach, Summer  2024"),
        ("description", "sun & sea"),
    ];

    // Without the CSRF header, or with a wrong one, or from another origin: refused, nothing stored.
    let r = upload(&mut alice, None, &meta, &bytes);
    assert_eq!(r.status, 403, "{}", r.text());
    let r = upload(&mut alice, Some("00112233"), &meta, &bytes);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("\"error\""), "errors are JSON: {}", r.text());
    let r = alice.request(
        "POST",
        &format!("/share/upload?{}", form_encode(&meta)),
        &[("X-CSRF-Token", &csrf), ("Origin", "http://evil.example")],
        &bytes,
    );
    assert_eq!(r.status, 403);
    // Bad input: a clear 4xx each, and nothing registered.
    let long_tag = "t".repeat(65);
    let many_tags = (0..40).map(|i| format!("t{i}")).collect::<Vec<_>>().join(" ");
    type BadUpload<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a [u8]);
    let bad_inputs: [BadUpload<'_>; 5] = [
        ("an empty file", vec![("name", "empty.txt")], b""),
        ("no name", vec![("title", "nameless")], b"hello"),
        ("a made-up kind", vec![("name", "a.bin"), ("kind", "movie")], b"hello"),
        ("a tag too long", vec![("name", "a.bin"), ("tags", &long_tag)], b"hello"),
        ("too many tags", vec![("name", "a.bin"), ("tags", &many_tags)], b"hello"),
    ];
    for (what, query, body) in &bad_inputs {
        let r = upload(&mut alice, Some(&csrf), query, body);
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        let message = r.text();
        assert!(message.contains("\"message\""), "{what}: {message}");
    }
    let r = api_search(&s, &alice_token, "");
    assert_eq!(r.total, 0, "refused uploads registered nothing: {:?}", r.hits);

    // The upload itself: its ID is the file's BLAKE3, its kind detected from the name.
    let r = upload(&mut alice, Some(&csrf), &meta, &bytes);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.logs());
    let done: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(done["file_id"].as_str(), Some(want_id.as_str()));
    assert_eq!(done["url"].as_str(), Some(format!("/f/{want_id}").as_str()));
    wait_until(AVAILABILITY_DEADLINE, "the upload available on 3 appliances", || {
        let r = api_search(&s, &bob_token, "");
        r.hits.iter().any(|h| h.file_id == want_id && h.availability == 3)
    });
    let hit = api_search(&s, &bob_token, "").hits.remove(0);
    assert_eq!(hit.kind, "video");
    assert_eq!(hit.title, XSS);
    assert_eq!(hit.tags, ["beach", "summer", "2024"]);

    // Anyone may fetch it with the CLI, byte for byte.
    let out = dir.path().join("got.mp4");
    let cli = trove_command([
        "get".as_ref(),
        want_id.as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
        "--no-progress".as_ref(),
    ])
    .env("TROVE_CONTROLLER", &base)
    .env("TROVE_TOKEN", &bob_token)
    .env("XDG_CONFIG_HOME", dir.path())
    .output()
    .unwrap();
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    assert_eq!(b3sum(&out), want_id);

    // The file page: everything named in docs/dashboard.md, the title as text.
    let page = bob.get(&format!("/f/{want_id}"));
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap_or("").to_owned();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let html = page.text();
    assert!(html.contains(XSS_ESCAPED), "escaped title");
    assert!(!html.contains(XSS), "no raw script tag");
    assert_eq!(text_after(&html, "id=\"title\"").as_deref(), Some(XSS_ESCAPED));
    assert_eq!(text_after(&html, "id=\"kind\"").as_deref(), Some("video"));
    assert_eq!(text_after(&html, "id=\"file-id\"").as_deref(), Some(want_id.as_str()));
    assert_eq!(
        text_after(&html, "id=\"availability\"").as_deref(),
        Some("3 copies online")
    );
    assert_eq!(text_after(&html, "id=\"replication\"").as_deref(), Some("3 / 3"));
    assert!(html.contains(&format!(
        "<video id=\"player\" controls preload=\"metadata\" src=\"/api/v1/files/{want_id}/content\""
    )));
    assert!(html.contains(&format!(
        "id=\"download\" class=\"button\" href=\"/api/v1/files/{want_id}/content?download=1\""
    )));
    assert_eq!(
        html_input_value(&html, "share-link").or_else(|| {
            let at = html.find("id=\"share-link\"")?;
            Some(html[at..].split("value=\"").nth(1)?.split('"').next()?.to_owned())
        }),
        Some(format!("{base}/f/{want_id}"))
    );
    for t in ["beach", "summer", "2024"] {
        assert!(
            html.contains(&format!("class=\"tag\" href=\"/search?tag={t}\">{t}</a>")),
            "tag {t}"
        );
    }
    assert!(html.contains("<a href=\"/u/alice\">alice</a>"), "sharers");
    assert!(html.contains("sun &amp; sea"));

    // Search finds it by its words and filters, with the title escaped and marked available.
    let page = bob.get("/search?q=alert&kind=video&tag=beach+summer&min_size=1MB&since=2000-01-01");
    assert_eq!(page.status, 200);
    let html = page.text();
    assert_eq!(text_after(&html, "id=\"total\"").as_deref(), Some("1"));
    assert!(html.contains("<li class=\"result\">"), "available, not marked: {html}");
    assert!(html.contains(XSS_ESCAPED) && !html.contains(XSS));
    assert_eq!(
        text_after(&html, "class=\"availability\"").as_deref(),
        Some("3 copies online")
    );
    assert_eq!(text_after(&html, "class=\"size\"").as_deref(), Some("3.0 MiB"));
    let none = bob.get("/search?q=alert&kind=audio").text();
    assert_eq!(text_after(&none, "id=\"total\"").as_deref(), Some("0"));
    let bad = bob.get("/search?kind=movie");
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("class=\"error\""));

    // A private upload: its page is a 404 for everyone but its sharer, and search hides it.
    let secret = b"a private diary, not for bob\n".repeat(100);
    let r = upload(
        &mut alice,
        Some(&csrf),
        &[("name", "diary.txt"), ("title", "Dear diary"), ("private", "1")],
        &secret,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let secret_id = blake3::hash(&secret).to_hex().to_string();
    assert_eq!(alice.get(&format!("/f/{secret_id}")).status, 200);
    assert!(
        alice
            .get(&format!("/f/{secret_id}"))
            .text()
            .contains("id=\"kind\" class=\"badge\">document<")
    );
    let r = bob.get(&format!("/f/{secret_id}"));
    assert_eq!(r.status, 404);
    assert!(!r.text().contains("Dear diary"));
    assert_eq!(bob.get(&format!("/f/{}", "0".repeat(64))).status, 404, "never was");
    assert_eq!(bob.get("/f/not-an-id").status, 404);
    assert!(!bob.get("/search?q=diary").text().contains("Dear diary"));
    assert!(!bob.get("/u/alice").text().contains("Dear diary"));

    // Bob viewed and downloaded the video (the CLI recorded the download); one view more.
    let view = http(
        "POST",
        &format!("{base}/api/v1/files/{want_id}/events"),
        Some(&bob_token),
        Some(r#"{"kind":"view"}"#),
    );
    assert_eq!(view.status, 204, "{}", view.body);

    // Alice's dashboard: space used, her shares with distinct downloaders and views.
    let me = alice.get("/me");
    assert_eq!(me.status, 200);
    let html = me.text();
    let used = bytes.len() as u64 + secret.len() as u64;
    assert!(
        html.contains(&format!("id=\"space-used\" title=\"{used} bytes\"")),
        "{html}"
    );
    assert_eq!(html.matches("<tr class=\"share\">").count(), 2);
    let row = &html[html.find(&format!("href=\"/f/{want_id}\"")).expect("the video's row")..];
    assert!(row.starts_with(&format!("href=\"/f/{want_id}\">{XSS_ESCAPED}</a>")));
    assert_eq!(text_after(row, "class=\"downloaders\"").as_deref(), Some("1"));
    assert_eq!(text_after(row, "class=\"views\"").as_deref(), Some("1"));
    assert!(!html.contains(XSS));

    // Bob's: what he got and watched, and recommendations with their reasons.
    let html = bob.get("/me").text();
    assert_eq!(html.matches("<tr class=\"event\">").count(), 2, "{html}");
    assert!(html.contains("<td class=\"what\">download</td>") && html.contains("<td class=\"what\">view</td>"));
    assert!(html.contains(XSS_ESCAPED) && !html.contains(XSS));
    assert!(html.contains("id=\"recommendations\""));
    assert_eq!(text_after(&html, "id=\"space-used\"").as_deref(), Some("0 B"));

    // Carol, new, is recommended what others got, with the reason line.
    let mut carol = signup_form(&s, "carol");
    let html = carol.get("/me").text();
    let recs = &html[html.find("id=\"recommendations\"").unwrap()..];
    assert!(recs.contains(&format!("href=\"/f/{want_id}\"")), "{recs}");
    assert!(
        recs.contains("<div class=\"reason\">popular: 1 person got this</div>"),
        "{recs}"
    );
    assert!(!recs.contains(&secret_id), "never someone else's private file");
}

/// A controller with no appliance: enough for pages that store no bytes.
fn start_bare() -> Stack {
    Stack::start(StackKind::EmbeddedSqlite, Controller::builder(), 0)
}

/// Logs `b` in through the login form with `next`; the answer to the POST.
fn login_form(b: &mut WebClient, name: &str, next: &str) -> WebAnswer {
    let page = b.get("/login");
    let csrf = html_input_value(&page.text(), "csrf").expect("the login form has a csrf field");
    b.post_form(
        "/login",
        &[("csrf", &csrf), ("name", name), ("password", PASSWORD), ("next", next)],
    )
}

#[test]
fn login_next_with_control_characters_stays_on_this_site() {
    // Pins two failures of `next`: a browser drops tabs and newlines from a URL, so
    // `/<TAB>/evil.example` led to evil.example; and a lone LF made the redirect panic
    // (not a valid header value), so the browser got a dropped connection.
    let s = start_bare();
    signup_form(&s, "alice");
    for next in ["/\t/evil.example/", "/\n/evil.example/", "/\r/evil.example/", "/me\n"] {
        let mut b = WebClient::new(&url(&s));
        let r = login_form(&mut b, "alice", next);
        assert_eq!(r.status, 303, "next {next:?}: {}", r.text());
        assert_eq!(r.header("location"), Some("/"), "next {next:?}");
        // Already logged in, the login page redirects to `next` at once: the same rule.
        let r = b.get(&format!("/login?{}", form_encode(&[("next", next)])));
        assert_eq!(r.status, 303, "next {next:?}");
        assert_eq!(r.header("location"), Some("/"), "next {next:?}");
    }
    let mut b = WebClient::new(&url(&s));
    let r = login_form(&mut b, "alice", "/search?q=a%20b");
    assert_eq!(
        r.header("location"),
        Some("/search?q=a%20b"),
        "a plain local path is kept"
    );
}

#[test]
fn pages_are_not_kept_in_the_browser_cache() {
    // Pins: pages carried no Cache-Control, so on a shared browser the Back button after a
    // logout showed the last person's pages from the cache, an admin's join token included.
    let s = start_bare();
    let mut alice = signup_form(&s, "alice");
    for path in ["/", "/me", "/profile", "/u/alice", "/share", "/fleet"] {
        let r = alice.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
    }
    let mut admin = WebClient::new(&url(&s));
    admin.cookies.insert("trove_session".into(), s.controller.admin_token());
    let csrf = csrf_of(&mut admin);
    let r = admin.post_form("/admin/enroll", &[("csrf", &csrf), ("name", "garage-pi")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("id=\"join-token\""));
    assert_eq!(r.header("cache-control"), Some("no-store"), "the join token page");
    let login = WebClient::new(&url(&s)).get("/login");
    assert_eq!(login.header("cache-control"), Some("no-store"), "its pre-session token");
    // Error pages too, but not the stylesheet.
    assert_eq!(alice.get("/f/nope").header("cache-control"), Some("no-store"));
    let css = alice.get("/static/trove.css");
    assert_eq!(css.status, 200);
    assert!(css.header("cache-control").is_some_and(|c| c.starts_with("public")));
}

#[test]
fn a_browser_session_runs_out_after_its_lifetime_and_a_cli_token_does_not() {
    // Pins: a browser session's token is refused once `--session-lifetime-secs` have passed
    // since the login, by the pages and the API alike (a copied cookie is worth nothing
    // after that), and leaves the token list; the cookie's Max-Age says as much to the
    // browser; a CLI token made at the same time lives on.
    let s = Stack::start(
        StackKind::EmbeddedSqlite,
        Controller::builder().arg("--session-lifetime-secs").arg("3"),
        0,
    );
    signup_form(&s, "alice");
    let mut b = WebClient::new(&url(&s));
    let r = login_form(&mut b, "alice", "/me");
    assert_eq!(r.status, 303, "{}", r.text());
    let set = r.set_cookie("trove_session").expect("a session cookie");
    assert!(set.contains("Max-Age=3;") || set.ends_with("Max-Age=3"), "{set}");
    let session = token_of(&b);
    let login = http(
        "POST",
        &format!("{}/api/v1/login", url(&s)),
        None,
        Some(&format!(r#"{{"name":"alice","password":"{PASSWORD}"}}"#)),
    );
    assert_eq!(login.status, 200, "{}", login.body);
    let cli = login.json::<LoginResponse>().token;
    assert_eq!(b.get("/me").status, 200, "a fresh session works");
    assert_eq!(
        http("GET", &format!("{}/api/v1/me", url(&s)), Some(&session), None).status,
        200
    );

    wait_until(Duration::from_secs(30), "the session to run out", || {
        b.get("/me").status == 303
    });
    let r = b.get("/me");
    assert_eq!(
        r.header("location"),
        Some("/login?next=%2Fme"),
        "back to the login page"
    );
    let api = http("GET", &format!("{}/api/v1/me", url(&s)), Some(&session), None);
    assert_eq!(api.status, 401, "the API refuses the session token too: {}", api.body);
    let tokens = http("GET", &format!("{}/api/v1/tokens", url(&s)), Some(&cli), None);
    assert_eq!(tokens.status, 200, "the CLI token lives on: {}", tokens.body);
    let tokens: Vec<TokenView> = tokens.json();
    assert!(
        tokens.iter().all(|t| t.label != "web"),
        "run-out sessions leave the token list: {tokens:?}"
    );
    assert!(tokens.iter().any(|t| t.current && t.label == "login"), "{tokens:?}");
}

/// Free bytes for an unprivileged writer on the filesystem holding `dir`.
fn free_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: zeroed is a valid statvfs (plain integers); `c` is a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::statvfs(c.as_ptr(), &mut st) },
        0,
        "statvfs {}",
        dir.display()
    );
    (st.f_bavail as u64).saturating_mul(st.f_frsize as u64)
}

#[test]
fn an_upload_that_runs_the_disk_low_midway_is_refused_with_507_and_leaves_nothing() {
    // Pins: an upload that does not say its size (chunked) is let in while there is room,
    // and refused with 507 at the free-space check after 256 MiB once what it spooled leaves
    // less than the reserve: the spool file is removed and nothing is registered. The reserve
    // is set 128 MiB under what is free now, so the disk "fills" halfway through.
    let tmp = std::env::temp_dir();
    let free = free_bytes(&tmp);
    assert!(free > 512 << 20, "this test needs 512 MiB free in {}", tmp.display());
    let reserve = free - (128 << 20);
    let s = Stack::start(
        StackKind::EmbeddedSqlite,
        Controller::builder()
            .arg("--upload-reserve-bytes")
            .arg(&reserve.to_string()),
        0,
    );
    let mut alice = signup_form(&s, "alice");
    let csrf = csrf_of(&mut alice);
    let piece = vec![9u8; 1 << 20];
    let path = format!("/share/upload?{}", form_encode(&[("name", "endless.bin")]));
    let headers = [
        ("Content-Type", "application/octet-stream"),
        ("X-CSRF-Token", csrf.as_str()),
    ];
    let r = alice.request_chunked("POST", &path, &headers, &piece, 320);
    assert_eq!(r.status, 507, "{}", r.text());
    let answer: serde_json::Value = serde_json::from_slice(&r.body).expect("a JSON error");
    assert_eq!(answer["error"].as_str(), Some("insufficient_storage"), "{answer}");
    let uploads = s.controller.data_dir().join("uploads");
    wait_until(Duration::from_secs(10), "the spool file to be removed", || {
        std::fs::read_dir(&uploads).expect("DATA/uploads").next().is_none()
    });
    // Deleted and closed: the space is free again.
    wait_until(Duration::from_secs(10), "the spooled space to be free again", || {
        free_bytes(&tmp) > reserve
    });
    let r = api_search(&s, &token_of(&alice), "");
    assert_eq!(r.total, 0, "nothing is registered: {:?}", r.hits);
}

#[test]
fn an_upload_the_disk_has_no_room_for_is_refused_with_507_and_leaves_nothing() {
    // Pins: before reading a byte, an upload whose declared size would leave less than the
    // reserve free on the controller's disk is refused with 507 and a message pointing at
    // `trove share`; nothing is spooled and nothing registered. (A reserve no disk can meet
    // stands in for a full disk.)
    let s = Stack::start(
        StackKind::EmbeddedSqlite,
        Controller::builder()
            .arg("--upload-reserve-bytes")
            .arg(&u64::MAX.to_string()),
        0,
    );
    let mut alice = signup_form(&s, "alice");
    let csrf = csrf_of(&mut alice);
    let bytes = vec![7u8; 100_000];
    let r = upload(&mut alice, Some(&csrf), &[("name", "big.bin")], &bytes);
    assert_eq!(r.status, 507, "{}", r.text());
    let answer: serde_json::Value = serde_json::from_slice(&r.body).expect("a JSON error");
    assert_eq!(answer["error"].as_str(), Some("insufficient_storage"), "{answer}");
    assert!(
        answer["message"].as_str().is_some_and(|m| m.contains("trove share")),
        "{answer}"
    );
    let spooled: Vec<_> = std::fs::read_dir(s.controller.data_dir().join("uploads"))
        .expect("DATA/uploads")
        .collect();
    assert!(spooled.is_empty(), "nothing is spooled: {spooled:?}");
    let r = api_search(&s, &token_of(&alice), "");
    assert_eq!(r.total, 0, "nothing is registered: {:?}", r.hits);
}
