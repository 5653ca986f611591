//! `graphql`: the API server (DESIGN §7). Not built yet (the GraphQL issue); it refuses to
//! start rather than pretend to serve.

fn main() -> std::process::ExitCode {
    eprintln!("graphql: the API server is not implemented yet; see the GraphQL and REST API issue");
    std::process::ExitCode::from(2)
}
