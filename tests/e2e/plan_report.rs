//! `tessera plan --report plan.html`: a self-contained page (no script, nothing fetched) whose
//! SVG skeleton (elements and classes, no coordinates) is snapshotted, and which headless
//! Chromium (installed by `scripts/setup.sh`) renders without console errors.

use crate::support::{llama3_70b_serve_plan, tessera};
use std::path::Path;

/// The elements of every `<svg>` as `tag.class xN`, counted per SVG in order of first
/// appearance (coordinates and text left out), one SVG per paragraph.
fn svg_skeleton(html: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut counts: Vec<(String, usize)> = Vec::new();
    let mut inside = false;
    for piece in html.split('<').skip(1) {
        let closing = piece.starts_with('/');
        let tag: String = piece.trim_start_matches('/').chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        if tag == "svg" {
            if closing {
                out.extend(counts.drain(..).map(|(name, n)| format!("  {name} x{n}")));
                out.push(String::new());
            } else {
                out.push(format!("svg.{}", attribute(piece, "class")));
            }
            inside = !closing;
            continue;
        }
        if !inside || closing || tag.is_empty() {
            continue;
        }
        let name = match attribute(piece, "class") {
            c if c.is_empty() => tag,
            c => format!("{tag}.{c}"),
        };
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, n)) => *n += 1,
            None => counts.push((name, 1)),
        }
    }
    out.join("\n")
}

fn attribute(tag_text: &str, name: &str) -> String {
    let end = tag_text.find('>').unwrap_or(tag_text.len());
    let head = &tag_text[..end];
    let key = format!("{name}=\"");
    head.find(&key).and_then(|at| head[at + key.len()..].split('"').next()).unwrap_or("").to_string()
}

fn report(dir: &Path, args: &[&str]) -> String {
    let path = dir.join("plan.html");
    let path_text = path.to_str().expect("a UTF-8 path");
    let all: Vec<&str> = args.iter().copied().chain(["--report", path_text]).collect();
    let out = tessera(dir, &all);
    assert_eq!(out.code, 0, "{}", out.stderr);
    std::fs::read_to_string(&path).expect("the report")
}

fn self_contained(html: &str) {
    assert!(html.starts_with("<!DOCTYPE html>"), "{}", &html[..40.min(html.len())]);
    assert!(
        !html.contains("<script") && !html.contains("<link") && !html.contains("<img"),
        "external or active content"
    );
    let urls = html.matches("http").count();
    let namespaces = html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count();
    assert_eq!(urls, namespaces, "only the SVG namespace may name a URL");
}

const TRAIN: [&str; 8] =
    ["plan", "gpt3-175b", "--cluster", "a100-80g-sxm:gpus=1024", "--global-batch", "1536", "--alternatives", "3"];
const SERVE_WORKLOAD: [&str; 4] = ["--workload", "in=2048,out=256,rate=4", "--slo", "ttft=500,tpot=50"];

#[test]
fn the_training_report_draws_timeline_memory_links_and_frontier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let html = report(dir.path(), &TRAIN);
    self_contained(&html);
    // 8 stages x 48 micro-batches x (forward, backward) plus their transfers.
    assert_eq!(html.matches("<rect class=\"forward\"").count(), 8 * 48);
    assert_eq!(html.matches("<rect class=\"backward\"").count(), 8 * 48);
    assert!(html.contains("<table class=\"alternatives\">"));
    insta::assert_snapshot!("gpt3_175b_report_svg", svg_skeleton(&html));
    chromium_renders_without_console_errors(dir.path(), &html, 4);
}

#[test]
fn the_serving_report_draws_the_throughput_latency_frontier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let html = report(dir.path(), &llama3_70b_serve_plan(&SERVE_WORKLOAD));
    self_contained(&html);
    insta::assert_snapshot!("llama3_70b_serving_report_svg", svg_skeleton(&html));
    chromium_renders_without_console_errors(dir.path(), &html, 2);
}

/// The console lines Chromium logs while loading `page`, and the DOM it ends with; `None`
/// when no Chromium is installed.
fn chromium(dir: &Path, name: &str, page: &str) -> Option<(Vec<String>, String)> {
    let binary = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| std::process::Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))?;
    let path = dir.join(name);
    std::fs::write(&path, page).expect("write the page");
    let out = std::process::Command::new(binary)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0", "--dump-dom"])
        .arg(format!("file://{}", path.display()))
        .output()
        .expect("run chromium");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let console = stderr.lines().filter(|l| l.contains(":CONSOLE")).map(String::from).collect();
    Some((console, String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn chromium_renders_without_console_errors(dir: &Path, html: &str, svgs: usize) {
    // The check itself must see errors: a page that logs one and calls an undefined function.
    let bad = "<!DOCTYPE html><html><body><script>console.error('boom'); undefinedFn();</script></body></html>";
    let Some((bad_console, _)) = chromium(dir, "bad.html", bad) else {
        println!("skipping the Chromium check: no chromium on PATH (scripts/setup.sh installs it)");
        return;
    };
    assert!(bad_console.iter().any(|l| l.contains("boom")), "{bad_console:?}");
    let (console, dom) = chromium(dir, "plan.html", html).expect("chromium ran a moment ago");
    assert!(console.is_empty(), "{console:?}");
    assert_eq!(dom.matches("<svg").count(), svgs, "the rendered DOM keeps every SVG");
}
