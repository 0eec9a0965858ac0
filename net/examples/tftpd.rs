//! Minimal stand-alone TFTP server for manual checks: `tftpd ROOT [ADDR]`.
fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let root = args.get(1).cloned().unwrap_or_else(|| ".".into());
    let addr = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:6969".into());
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let s = rackd_net::tftp::TftpServer::bind(
            addr.parse().expect("addr"),
            std::path::Path::new(&root),
            Default::default(),
        )
        .await?;
        eprintln!("serving {root} on {}", s.local_addr()?);
        s.run().await
    })
}
