//! `sim`: the Binance-protocol simulator. Not built yet (the simulator issue); it refuses to
//! start rather than pretend to serve.

fn main() -> std::process::ExitCode {
    eprintln!("sim: the simulator is not implemented yet; see the simulator issue");
    std::process::ExitCode::from(2)
}
