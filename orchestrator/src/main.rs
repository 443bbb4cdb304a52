fn main() {
    println!("dvlab");
}
