fn main() {
    println!("dvnode");
}
