//! `cocos-imgbuild`: command-line front end of the `cocos_imgbuild` library.

fn main() {
    eprintln!("cocos-imgbuild: not implemented yet");
    std::process::exit(2);
}
