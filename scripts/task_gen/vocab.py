"""Word pools the task generators draw from (names, places, products).

Plain ASCII on purpose: every value is written the same way in a question and in its answer, so a
small model can copy it token for token. Changing a pool changes every generated file: rebuild with
`python scripts/build_tasks.py` and commit the result.
"""

from __future__ import annotations

FIRST_NAMES = (
    "Anna", "Ben", "Carla", "David", "Elena", "Felix", "Grace", "Hugo", "Ines", "Jonas",
    "Karin", "Leo", "Maria", "Nils", "Olga", "Paul", "Rosa", "Sam", "Tara", "Umar",
    "Vera", "Walter", "Yara", "Zoe", "Adam", "Bianca", "Carlos", "Dora", "Emil", "Fatima",
    "Georg", "Hanna", "Ivan", "Julia", "Kofi", "Lena", "Marco", "Nora", "Oscar", "Petra",
)

LAST_NAMES = (
    "Berg", "Costa", "Dietz", "Evans", "Fischer", "Garcia", "Hansen", "Ito", "Jensen", "Klein",
    "Lopez", "Meyer", "Novak", "Olsen", "Park", "Quinn", "Rossi", "Silva", "Torres", "Weber",
    "Adler", "Brandt", "Chen", "Dahl", "Engel", "Ford", "Gruber", "Holm", "Kaya", "Lund",
)

# city -> country. Two or three cities per country so "customers in Germany" needs a join.
CITIES = {
    "Berlin": "Germany", "Hamburg": "Germany", "Munich": "Germany",
    "Paris": "France", "Lyon": "France", "Marseille": "France",
    "Madrid": "Spain", "Valencia": "Spain",
    "Rome": "Italy", "Milan": "Italy", "Turin": "Italy",
    "Lisbon": "Portugal", "Porto": "Portugal",
    "Vienna": "Austria", "Graz": "Austria",
    "Oslo": "Norway", "Bergen": "Norway",
    "Warsaw": "Poland", "Krakow": "Poland",
    "Dublin": "Ireland", "Cork": "Ireland",
}

# category -> product names (title case: they are names, quoted the same way in questions and SQL)
PRODUCTS = {
    "Electronics": ("Laptop", "Phone Charger", "Headphones", "Webcam", "Smart Watch", "Tablet",
                    "Monitor", "Keyboard"),
    "Furniture": ("Office Chair", "Desk Lamp", "Bookshelf", "Sofa", "Dining Table", "Wardrobe",
                  "Bed Frame"),
    "Kitchen": ("Coffee Grinder", "Toaster", "Kettle", "Frying Pan", "Blender", "Knife Set",
                "Rice Cooker"),
    "Garden": ("Garden Hose", "Lawn Mower", "Flower Pot", "Rake", "Garden Bench", "Shovel"),
    "Sports": ("Yoga Mat", "Tennis Racket", "Football", "Bicycle Helmet", "Running Shoes",
               "Dumbbells", "Ski Goggles"),
    "Books": ("Cookbook", "Travel Guide", "Atlas", "Dictionary", "Novel", "Comic Book"),
}

# Items for the JSON-extraction task: things one orders by the pack, box or bag, so the sentence
# can say "3 packs of green tea" and the answer keeps "green tea" verbatim.
ITEMS = (
    "green tea", "printer paper", "coffee beans", "AA batteries", "dog food", "olive oil",
    "brown rice", "pasta", "paper towels", "wood screws", "garden soil", "cat litter",
    "dish soap", "brown sugar", "sparkling water", "tennis balls", "light bulbs", "notebooks",
    "pencils", "wool socks", "oat milk", "dark chocolate", "sea salt", "bird seed",
    "trash bags", "rubber gloves", "coloured chalk", "herbal tea", "rye flour", "almonds",
)

CONTAINERS = ("packs", "boxes", "bags", "units", "cartons", "cases")
