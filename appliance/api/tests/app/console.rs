//! The console's files as the router serves them: the page at `/` with the
//! console's CSP, its files under this build's name cached for good,
//! anything else 404, and all of it open while the vault is sealed (the
//! unseal page is how officers unseal).

use tether_domain::audit::Origin;

use crate::support::{As, Started, send, start};

#[tokio::test(flavor = "multi_thread")]
async fn the_page_and_its_files_are_served_under_this_builds_name_and_load_while_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let Started { app, stop, .. } = start(&dir).await;
    let router = tether_api::console_router(app.state().clone());

    let (status, page, headers) = send(&router, As::Anyone, "GET", "/", None).await;
    assert_eq!((status, &headers["content-type"]), (200, &"text/html; charset=utf-8".parse().unwrap()));
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("require-trusted-types-for 'script'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    let page = page.as_str().unwrap().to_owned();
    assert!(!page.contains("{{assets}}"), "every placeholder is filled");
    assert!(!page.contains(" style=") && !page.contains("<style"), "no inline style");
    let handler = page
        .split(" on")
        .skip(1)
        .any(|rest| rest.split('=').next().is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_lowercase())));
    assert!(!handler, "no on*= handler attribute");
    assert!(
        page.matches("<script").count() == page.matches("<script type=\"module\" src=").count(),
        "scripts load from files only"
    );
    let main = page.split("src=\"").nth(1).and_then(|r| r.split('"').next()).unwrap().to_owned();
    assert!(main.starts_with("/assets/") && main.ends_with("/js/main.js"), "{main}");

    let (status, script, headers) = send(&router, As::Anyone, "GET", &main, None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(headers["cache-control"], "public, max-age=31536000, immutable");
    assert!(script.as_str().unwrap().contains("import"), "the module itself");
    let other_build = main.replacen("/assets/", "/assets/0000", 1);
    for missing in [other_build.as_str(), "/assets/x/js/main.js", &main.replace("main.js", "nope.js")] {
        let (status, body, headers) = send(&router, As::Anyone, "GET", missing, None).await;
        assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{missing}");
        assert_eq!(headers["cache-control"], "no-store", "{missing}");
    }

    app.state().vault.seal(&Origin::system()).await.unwrap();
    assert_eq!(send(&router, As::Anyone, "GET", "/", None).await.0, 200, "the page loads while sealed");
    assert_eq!(send(&router, As::Anyone, "GET", &main, None).await.0, 200, "and its files");
    assert_eq!(send(&router, As::Anyone, "GET", "/api/v1/tasks", None).await.0, 503);
    stop.send(()).unwrap();
    app.wait().await.unwrap();
}

#[test]
fn the_first_load_stays_under_150_kib() {
    let total: usize = tether_api::console::files().iter().map(|(_, size)| size).sum();
    assert!(total <= 150 * 1024, "the console's files weigh {total} bytes");
}

#[test]
fn the_consoles_scripts_use_no_html_sink_no_eval_and_no_inline_style() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web-ui/js");
    let forbidden = [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "'style'",
        "localStorage",
        "sessionStorage",
    ];
    let (mut read, mut dirs) = (0, vec![dir.clone()]);
    let mut scripts = Vec::new();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() { dirs.push(path) } else { scripts.push(path) }
        }
    }
    for path in scripts {
        let text = std::fs::read_to_string(&path).unwrap();
        for word in forbidden {
            assert!(!text.contains(word), "{} uses {word}", path.display());
        }
        assert!(
            !text.contains("setTimeout('") && !text.contains("setTimeout(\""),
            "{}: a string timer",
            path.display()
        );
        read += 1;
    }
    assert!(read >= 15, "the scripts were read from {} and its pages/", dir.display());
}
