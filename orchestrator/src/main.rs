fn main() { println!("dvlab"); }
