//! `archiver`: the operator's tool; everything is in [`recording_archiver::cli`].

fn main() -> std::process::ExitCode {
    recording_archiver::cli::main()
}
