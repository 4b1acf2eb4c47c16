//! Prometheus metrics, kept as plain atomic counters and rendered in the text format at
//! `/metrics` (a handful of series does not need a metrics framework).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::transport::Service;

#[derive(Debug, Default)]
pub struct Metrics {
    upload_pack: AtomicU64,
    receive_pack: AtomicU64,
    http_errors: AtomicU64,
}

impl Metrics {
    pub fn git_request(&self, service: Service) {
        let counter = match service {
            Service::UploadPack => &self.upload_pack,
            Service::ReceivePack => &self.receive_pack,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn http_error(&self) {
        self.http_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP devpop_git_requests_total Git smart HTTP requests served, by service.");
        let _ = writeln!(out, "# TYPE devpop_git_requests_total counter");
        let _ = writeln!(out, "devpop_git_requests_total{{service=\"git-upload-pack\"}} {}", get(&self.upload_pack));
        let _ = writeln!(out, "devpop_git_requests_total{{service=\"git-receive-pack\"}} {}", get(&self.receive_pack));
        let _ = writeln!(out, "# HELP devpop_http_errors_total HTTP requests answered with a 4xx or 5xx status.");
        let _ = writeln!(out, "# TYPE devpop_http_errors_total counter");
        let _ = writeln!(out, "devpop_http_errors_total {}", get(&self.http_errors));
        out
    }
}
