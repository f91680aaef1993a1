"""The competition's closed vocabulary (docs/competition.md): colours, brands, types, the 21 pedestrian
attributes and every phrase variant the captions use. One place, so parser, generator and renderer agree."""

from __future__ import annotations

COLORS: tuple[str, ...] = (
    "black",
    "blue",
    "brown",
    "green",
    "grey",
    "orange",
    "pink",
    "purple",
    "red",
    "white",
    "yellow",
)
VEHICLE_TYPES: tuple[str, ...] = ("Bus", "Microbus", "Minivan", "SUV", "Sedan", "Truck")
BRANDS: tuple[str, ...] = (
    "Audi",
    "BAOJUN",
    "BESTUNE",
    "BMW",
    "BYD",
    "Balong Heavy Truck",
    "Bentley",
    "Benz",
    "Buick",
    "Cadillac",
    "Chana",
    "Chery",
    "Chevrolet",
    "China-Moto",
    "Citroen",
    "Dongfeng",
    "FAW",
    "FORLAND",
    "FOTON",
    "Ford",
    "Geely",
    "Golden Dragon",
    "GreatWall",
    "HAFEI",
    "Haima",
    "Honda",
    "Hongyan",
    "Hyundai",
    "Infiniti",
    "Isuzu",
    "Iveco",
    "JAC",
    "JMC",
    "Jeep",
    "Jinbei",
    "KINGLONG",
    "Karma",
    "Kia",
    "LEOPAARD",
    "Landrover",
    "Lexus",
    "Luxgen",
    "MORRIS-GARAGE",
    "Mazda",
    "Mini",
    "Mitsubishi",
    "Nissan",
    "OPEL",
    "PEUGEOT",
    "Porsche",
    "ROEWE",
    "SGMW",
    "SKODA",
    "Shacman",
    "Shuanghuan",
    "Soueast",
    "Style",
    "Subaru",
    "Suzuki",
    "Toyota",
    "Volkswagen",
    "Volvo",
    "XIALI",
    "Yutong",
    "ZXAUTO",
)
# Brands written alone (no colour) in the attribute field.
BRAND_ONLY: tuple[str, ...] = ("Balong Heavy Truck", "Hongyan")

PEDESTRIAN_ATTRIBUTES: tuple[str, ...] = (
    "Female",
    "AgeOver60",
    "Age18-60",
    "AgeLess18",
    "Front",
    "Side",
    "Back",
    "Hat",
    "Glasses",
    "HandBag",
    "ShoulderBag",
    "Backpack",
    "HoldObjectsInFront",
    "ShortSleeve",
    "LongSleeve",
    "UpperStride",
    "UpperLogo",
    "UpperPlaid",
    "UpperSplice",
    "LongCoat",
    "Skirt&Dress",
)
N_ATTRIBUTES = len(PEDESTRIAN_ATTRIBUTES)
ATTR_INDEX: dict[str, int] = {name: i for i, name in enumerate(PEDESTRIAN_ATTRIBUTES)}

# Mutually exclusive groups: exactly one of each "one" group, at most one of each "at_most_one" group.
AGE_GROUP = (1, 2, 3)
ORIENTATION_GROUP = (4, 5, 6)
SLEEVE_GROUP = (13, 14)
UPPER_PATTERN_GROUP = (15, 16, 17, 18)
BAG_ORDER = (9, 10, 11, 12)  # only the first present bag is written in the caption
EXACTLY_ONE_GROUPS: dict[str, tuple[int, ...]] = {
    "age": AGE_GROUP,
    "orientation": ORIENTATION_GROUP,
    "sleeve": SLEEVE_GROUP,
}
AT_MOST_ONE_GROUPS: dict[str, tuple[int, ...]] = {"upper pattern": UPPER_PATTERN_GROUP}

# Caption phrases per attribute (docs/competition.md). The typo "wearning" is the data's own.
AGE_PHRASES: dict[int, tuple[str, ...]] = {
    1: ("aged 60 or older", "aged over 60", "an elderly person over 60 years old", "at least 60 years old"),
    2: ("between 18 and 60 years old", "an adult person aged 18-60"),
    3: ("a minor", "age 18 or younger", "less than 18 years old", "not an adult"),
}
ORIENTATION_PHRASES: dict[int, str] = {
    4: ", with {his} body facing the camera",
    5: ", and is standing sideways",
    6: ", with {his} body back to the camera",
}
BAG_PHRASES: dict[int, tuple[str, ...]] = {
    9: (
        " and with a handbag",
        " and carrying a handbag",
        " and holding a handbag",
        " and clutching a handbag",
    ),
    10: (
        " and with a shoulderbag",
        " and has a shoulderbag",
        " and is carrying a shoulder bag",
        " and has a bag over the shoulder",
    ),
    11: (" and with a backpack", " and carrying a backpack"),
    12: (" and holds objects in front",),
}
SLEEVE_PHRASES: dict[int, tuple[str, ...]] = {
    13: ("a short sleeve shirt", "a tee shirt with short sleeves", "a shirt with short sleeves"),
    14: ("a long sleeve shirt", "a tee shirt with long sleeves", "a shirt with long sleeves"),
}
UPPER_PATTERN_PHRASES: dict[int, tuple[str, ...]] = {
    15: (" with an upper stripe",),
    16: (" with an upper logo", " with a logo on the upper"),
    17: (" with an upper plaid", " with a plaid on the upper"),
    18: (" with an upper splice", " with a splice on the upper"),
}
SKIRT_PHRASES: tuple[str, ...] = (" and wearing skirt or dress", " and in a skirt or dress")
# Accessory form of sentence 2: items in this order, joined by "," with no space.
HAT_ITEM = "a hat"
GLASSES_ITEM = "glasses"
COAT_ITEMS: tuple[str, ...] = ("a longcoat", "a coat that is long")
BOOTS_ITEM = "boots"
SUBJECT_TEMPLATES: tuple[str, ...] = (
    "A pedestrian who is {gender} is {age}",
    "A {gender} pedestrian is someone who walks on foot, is {age}",
    "A {gender} pedestrian who is {age}",
    "A walking {person} who is {age}",
)
VEHICLE_TEXT_TEMPLATES: tuple[str, ...] = ("This is {article} {attr}", "{Article} {attr}")


def article_for(word: str) -> str:
    """The data writes 'an' only before 'orange'."""
    return "an" if word == "orange" else "a"
