//! The storm's HTTP clients: each machine opens one keep-alive connection, as iPXE does, and
//! fetches its script, then the kernel, then the initrd, reading every body to the end
//! without keeping it. Records each file's time and checks its length.

use std::time::{Duration, Instant};

pub struct FileTime {
    pub file: &'static str,
    pub secs: f64,
    pub error: Option<String>,
}

/// One machine's boot over HTTP: `files` are (label, path, expected length or None).
pub async fn boot(
    base: &str,
    files: &[(&'static str, String, Option<u64>)],
    timeout: Duration,
) -> Vec<FileTime> {
    let client = match reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .timeout(timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return files
                .iter()
                .map(|(f, _, _)| FileTime {
                    file: f,
                    secs: 0.0,
                    error: Some(e.to_string()),
                })
                .collect()
        }
    };
    let mut out = Vec::new();
    for (label, path, len) in files {
        let t0 = Instant::now();
        let error = get(&client, &format!("{base}{path}"), *len).await.err();
        out.push(FileTime {
            file: label,
            secs: t0.elapsed().as_secs_f64(),
            error,
        });
    }
    out
}

async fn get(client: &reqwest::Client, url: &str, len: Option<u64>) -> Result<(), String> {
    let mut r = client.get(url).send().await.map_err(|e| e.to_string())?;
    if r.status() != reqwest::StatusCode::OK {
        return Err(format!("status {}", r.status()));
    }
    let mut got = 0u64;
    while let Some(chunk) = r.chunk().await.map_err(|e| e.to_string())? {
        got += chunk.len() as u64;
    }
    match len {
        Some(l) if l != got => Err(format!("{got} bytes of {l}")),
        _ if got == 0 => Err("empty body".into()),
        _ => Ok(()),
    }
}
