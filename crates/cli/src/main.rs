fn main() {
    println!("smoothfs");
}
