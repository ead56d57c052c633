"""What the generated data looks like: sizes, messy rates, and the village vocabulary rows draw on.

Kept apart from the code that draws from it so the numbers docs/legacy-data.md documents sit in one
place, and the rates the measuring side checks against are the ones the world was built with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

# ---------------------------------------------------------------------------------------------
# Public constants: what the data looks like (docs/legacy-data.md documents the same numbers).

REFERENCE_DATE = datetime(2026, 6, 1, tzinfo=UTC)
HISTORY_DAYS = 548
BASE_ROWS: dict[str, int] = {"users": 10_000, "shops": 1_000, "products": 50_000, "orders": 100_000}
MIN_ROWS: dict[str, int] = {"users": 20, "shops": 2, "products": 10, "orders": 20}
ITEMS_PER_ORDER: tuple[tuple[int, float], ...] = ((1, 0.25), (2, 0.30), (3, 0.25), (4, 0.12), (5, 0.08))
MEAN_ITEMS_PER_ORDER = sum(k * p for k, p in ITEMS_PER_ORDER)  # 2.48
ITEMS_TOLERANCE = 0.03
MAX_SCALE = 1000.0

HOUSE_RATES: dict[str, float] = {
    "null": 0.05, "empty": 0.015, "blank": 0.005, "padded": 0.03, "lower_case": 0.04, "inner_space": 0.02,
}
CATEGORY_RATES: dict[str, float] = {
    "null": 0.02, "empty": 0.005, "blank": 0.003, "case_space": 0.05, "punctuation": 0.01,
    "slug_twin": 0.005, "non_ascii": 0.01, "punctuation_only": 0.002,
}
RATES: dict[str, dict[str, float]] = {
    "users.house_number": HOUSE_RATES,
    "shops.house_number": HOUSE_RATES,
    "users.phone": {"null": 0.10},
    "users.email": {"null": 0.30},
    "products.category": CATEGORY_RATES,
    "products.price": {"zero": 0.003, "negative": 0.002},
    "products.stock": {"negative": 0.005},
    "products.is_available": {"false": 0.06},
    "orders.total": {"mismatch": 0.01},
}
ITEM_PRICE_CHANGED_RATE = 0.03  # Bernoulli per order item: unit_price differs from the product's price
ADMIN_RATE = 0.001
SHOPS_PER_SHOPKEEPER = 1.1

# ---------------------------------------------------------------------------------------------
# Vocabulary: village-flavoured, fixed lists (not Faker: its lists change between versions, which
# would break determinism across installs, and a call per value is slow).

FIRST_NAMES = (
    "Aarti", "Abhishek", "Ajay", "Akash", "Amit", "Anil", "Anita", "Anjali", "Arjun", "Asha", "Ashok", "Bhavna",
    "Bhim", "Chandan", "Deepa", "Deepak", "Dev", "Dinesh", "Durga", "Ganesh", "Gauri", "Geeta", "Gopal", "Hari",
    "Harish", "Indira", "Jaya", "Jyoti", "Kamala", "Kavita", "Kiran", "Krishna", "Lakshmi", "Lalita", "Madhu",
    "Mahesh", "Manoj", "Meena", "Mohan", "Mukesh", "Murali", "Nandini", "Naresh", "Neha", "Nirmala", "Pankaj",
    "Parvati", "Pooja", "Prakash", "Pramod", "Priya", "Radha", "Raghu", "Rajesh", "Raju", "Ramesh", "Rani", "Ravi",
    "Rekha", "Sanjay", "Santosh", "Sarita", "Savitri", "Shankar", "Sharda", "Shiv", "Sita", "Sunil", "Sunita",
    "Suresh", "Tulsi", "Uma", "Usha", "Vijay", "Vimala", "Vinod", "Yamuna", "Yashoda", "Balram", "Chhaya", "Kamal",
    "Lata", "Mangal", "Phoolwati", "Ramkali", "Sukhdev", "Bhagwati", "Anand", "Kaveri", "Selvi", "Murugan",
    "Lakshman",
)
LAST_NAMES = (
    "Sharma", "Verma", "Yadav", "Patel", "Singh", "Kumar", "Gupta", "Reddy", "Naidu", "Rao", "Nair", "Pillai",
    "Iyer", "Das", "Ghosh", "Mondal", "Patil", "Pawar", "Jadhav", "Shinde", "Chauhan", "Rathore", "Thakur",
    "Mishra", "Tiwari", "Pandey", "Dubey", "Joshi", "Kulkarni", "Desai", "Mehta", "Shah", "Chaudhary", "Meena",
    "Gowda", "Hegde", "Shetty", "Kaur", "Gill", "Sahu", "Behera", "Nayak", "Mahato", "Oraon", "Kurmi", "Prajapati",
    "Kushwaha", "Nishad", "Saini", "Bairwa", "Lodhi", "Rajput",
)
EMAIL_DOMAINS = ("gmail.com", "gmail.com", "gmail.com", "yahoo.co.in", "rediffmail.com", "outlook.com")
VILLAGES = (
    "Rampur", "Sitapur", "Chandpur", "Bhimavaram", "Nandgaon", "Palampur", "Devgarh", "Sundarpur",
    "Anandpur", "Hosur", "Raghunathpur", "Kalyanpur", "Gokulpur", "Belgaum", "Madhavpur",
)
SHOP_PREFIXES = (
    "Sri Lakshmi", "Sri Ganesh", "Shiv Shakti", "Maa Durga", "Balaji", "Sai", "Hanuman", "Annapurna",
    "Jai Bharat", "Gram Seva", "Kisan", "New", "Raja", "Krishna", "Ganga", "Om Sai", "Sri Venkateswara",
    "Murugan", "Kaveri", "Jai Mata Di", "Bharat", "Village",
)
ADJECTIVES = ("Fresh", "Organic", "Homemade", "Local", "Premium", "Desi")
DESCRIPTIONS = (
    "Fresh stock, delivered to your house",
    "Best quality at village price",
    "Made by the women's self-help group of {v}",
    "Sourced from the farmers of {v}",
    "Popular in {v} and nearby villages",
    "Pack of good quality, check before use",
    "Ask the shopkeeper for bulk rates",
    "Pure and unadulterated",
)


@dataclass(frozen=True)
class Category:
    name: str
    weight: int  # share of shops whose main category this is
    price: tuple[int, int]  # rupees, low and high
    shop_types: tuple[str, ...]
    items: tuple[str, ...]
    sizes: tuple[str, ...] = ("",)


CATEGORIES: tuple[Category, ...] = (
    Category("Groceries", 20, (30, 600), ("Kirana Store", "General Store", "Provision Store"),
             ("Toor Dal", "Moong Dal", "Basmati Rice", "Sona Masoori Rice", "Wheat Atta", "Sugar", "Jaggery",
              "Mustard Oil", "Groundnut Oil", "Rock Salt", "Poha", "Besan", "Rava"), ("500 g", "1 kg", "5 kg")),
    Category("Vegetables", 8, (10, 120), ("Sabzi Mandi", "Vegetable Stall"),
             ("Tomato", "Onion", "Potato", "Brinjal", "Bhindi", "Green Chilli", "Coriander Bunch", "Bottle Gourd",
              "Cauliflower", "Palak"), ("250 g", "500 g", "1 kg")),
    Category("Fruits", 6, (20, 400), ("Fruit Stall", "Fruits Corner"),
             ("Banana", "Alphonso Mango", "Guava", "Papaya", "Pomegranate", "Coconut", "Chikoo", "Apple"),
             ("1 pc", "6 pcs", "1 dozen", "1 kg")),
    Category("Dairy", 8, (20, 700), ("Dairy", "Milk Centre"),
             ("Cow Milk", "Buffalo Milk", "Curd", "Paneer", "Desi Ghee", "Butter", "Chaas", "Khoa"),
             ("250 ml", "500 ml", "1 L", "200 g", "500 g")),
    Category("Sweets", 6, (60, 900), ("Sweets", "Mithai Bhandar"),
             ("Kaju Katli", "Gulab Jamun", "Rasgulla", "Jalebi", "Besan Ladoo", "Peda", "Soan Papdi", "Mysore Pak"),
             ("250 g", "500 g", "1 kg")),
    Category("Snacks", 5, (10, 250), ("Snacks Corner", "Namkeen Bhandar"),
             ("Namkeen Mixture", "Banana Chips", "Samosa", "Kachori", "Murukku", "Bhujia", "Khakhra"),
             ("100 g", "200 g", "500 g", "1 pc")),
    Category("Spices", 4, (15, 500), ("Masala Bhandar", "Spice Store"),
             ("Turmeric Powder", "Red Chilli Powder", "Garam Masala", "Cumin Seeds", "Coriander Powder",
              "Black Pepper", "Cardamom"), ("50 g", "100 g", "250 g")),
    Category("Beverages", 4, (10, 400), ("Chai Stall", "Juice Centre"),
             ("Tea Leaves", "Filter Coffee Powder", "Sugarcane Juice", "Lassi", "Nimbu Soda", "Rose Sharbat"),
             ("250 g", "500 ml", "1 L", "1 glass")),
    Category("Electronics", 5, (80, 3500), ("Electronics", "Electricals"),
             ("LED Bulb 9W", "Ceiling Fan", "Table Fan", "Extension Board", "Torch", "Solar Lantern",
              "Electric Iron", "Mixer Grinder")),
    Category("Mobile Accessories", 4, (20, 1500), ("Mobile Centre", "Mobile Shop"),
             ("Phone Charger", "Earphones", "Screen Guard", "Mobile Cover", "Power Bank", "Recharge Voucher",
              "USB Cable")),
    Category("Home Decor", 3, (30, 1200), ("Home Decor", "Handicrafts"),
             ("Brass Diya", "Rangoli Colours", "Toran", "Clay Pot", "Wall Hanging", "Cotton Durrie")),
    Category("Kitchenware", 3, (40, 2500), ("Bartan Bhandar", "Steel Centre"),
             ("Steel Tiffin", "Pressure Cooker", "Tawa", "Kadai", "Clay Matka", "Steel Glass Set")),
    Category("Clothing", 5, (80, 3000), ("Cloth Store", "Vastra Bhandar", "Tailors"),
             ("Cotton Saree", "Kurta", "Dhoti", "Lungi", "Salwar Suit", "Gamcha", "School Uniform"),
             ("S", "M", "L", "XL", "Free Size")),
    Category("Footwear", 2, (60, 1500), ("Footwear", "Shoe Mart"),
             ("Kolhapuri Chappal", "Rubber Slippers", "School Shoes", "Sandals"),
             ("Size 6", "Size 7", "Size 8", "Size 9")),
    Category("Stationery", 3, (5, 800), ("Stationery", "Book Depot"),
             ("Notebook", "Ball Pen", "Pencil Box", "Geometry Box", "Chart Paper", "School Bag")),
    Category("Hardware", 3, (20, 2000), ("Hardware", "Iron Mart"),
             ("PVC Pipe", "Hammer", "Nails", "Padlock", "Wall Paint", "Cement Bag", "Nylon Rope")),
    Category("Farm Supplies", 5, (50, 1800), ("Krishi Kendra", "Agro Centre", "Beej Bhandar"),
             ("Urea", "DAP Fertilizer", "Paddy Seeds", "Cotton Seeds", "Neem Oil Spray", "Sickle"),
             ("1 kg", "5 kg", "25 kg", "1 pc")),
    Category("Medicines", 4, (5, 300), ("Medical Store", "Pharmacy"),
             ("Paracetamol Strip", "ORS Sachet", "Cough Syrup", "Antiseptic Liquid", "Bandage Roll", "Pain Balm")),
    Category("Personal Care", 3, (5, 300), ("Cosmetics", "Beauty Corner"),
             ("Neem Soap", "Coconut Hair Oil", "Tooth Powder", "Shampoo Sachet", "Kajal", "Talcum Powder")),
    Category("Pooja Items", 3, (5, 500), ("Pooja Bhandar", "Pooja Stores"),
             ("Agarbatti", "Camphor", "Kumkum", "Cotton Wicks", "Pooja Thali", "Marigold Garland")),
    Category("Bakery", 3, (5, 400), ("Bakery", "Bakers"),
             ("Pav", "Bread Loaf", "Rusk", "Nankhatai", "Cream Roll", "Cake Slice")),
    Category("Toys", 1, (10, 900), ("Toy Shop", "Khilona Ghar"),
             ("Wooden Top", "Kite", "Marbles", "Cricket Bat", "Cloth Doll", "Rubber Ball")),
)
CATEGORY_INDEX = {c.name: i for i, c in enumerate(CATEGORIES)}

# Messy category values, each tied to the canonical category whose products carry it; rows of a
# kind take the values in turn, so even one row of `slug_twin` collides with a `punctuation` row.
MESSY_CATEGORY_VALUES: dict[str, tuple[tuple[str, str], ...]] = {
    "punctuation": (("Fruits & Veg", "Fruits"), ("Tea/Coffee", "Beverages"), ("Fruits-Veg!", "Fruits"),
                    ("Snacks!!", "Snacks"), ("Dairy.", "Dairy")),
    "slug_twin": (("Fruits Veg", "Fruits"), ("Tea Coffee", "Beverages")),
    "non_ascii": (("मिठाई", "Sweets"), ("Café Snacks", "Snacks"), ("सब्ज़ी", "Vegetables"), ("किराना", "Groceries")),
    "punctuation_only": (("!!!", ""), ("---", ""), ("?", ""), ("...", "")),
}
