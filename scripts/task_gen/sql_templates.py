"""Question/SQL templates for the text-to-SQL task.

Conventions the gold SQL keeps (so there is one right spelling to learn): uppercase keywords,
single-quoted strings, one line, table aliases c/p/o/ci in joins, no trailing semicolon, ASC never
written. Every slot value is written identically in the question and in the SQL ({city} in the
question, '{city}' in the SQL), so a model can copy it.
"""

from __future__ import annotations

from dataclasses import dataclass

J_OC = "FROM orders o JOIN customers c ON c.id = o.customer_id"
J_OP = "FROM orders o JOIN products p ON p.id = o.product_id"
J_OPC = f"{J_OP} JOIN customers c ON c.id = o.customer_id"
J_CCI = "FROM customers c JOIN cities ci ON ci.name = c.city"


@dataclass(frozen=True)
class Template:
    name: str
    questions: tuple[str, ...]  # paraphrases; one is picked per example
    sql: str


T = Template
TEMPLATES: tuple[Template, ...] = (
    # --- customers
    T("customers_in_city", ("Which customers live in {city}?", "List the customers from {city}.",
                            "Name the customers based in {city}."),
      "SELECT name FROM customers WHERE city = '{city}'"),
    T("count_city", ("How many customers live in {city}?", "Count the customers from {city}."),
      "SELECT COUNT(*) FROM customers WHERE city = '{city}'"),
    T("older_than", ("Which customers are older than {old}?", "List the customers over {old} years old."),
      "SELECT name FROM customers WHERE age > {old}"),
    T("younger_than", ("Which customers are younger than {young}?",
                       "List the customers under {young} years old."),
      "SELECT name FROM customers WHERE age < {young}"),
    T("city_older", ("Which customers in {city} are older than {age}?",
                     "List the customers from {city} who are over {age}."),
      "SELECT name FROM customers WHERE city = '{city}' AND age > {age}"),
    T("count_city_younger", ("How many customers in {city} are younger than {age}?",),
      "SELECT COUNT(*) FROM customers WHERE city = '{city}' AND age < {age}"),
    T("age_of", ("How old is {customer}?", "What is the age of {customer}?"),
      "SELECT age FROM customers WHERE name = '{customer}'"),
    T("city_of", ("Where does {customer} live?", "Which city is {customer} from?"),
      "SELECT city FROM customers WHERE name = '{customer}'"),
    T("avg_age_city", ("What is the average age of customers in {city}?",),
      "SELECT AVG(age) FROM customers WHERE city = '{city}'"),
    T("oldest_in_city", ("Who is the oldest customer in {city}?",),
      "SELECT name FROM customers WHERE city = '{city}' ORDER BY age DESC LIMIT 1"),
    T("youngest_in_city", ("Who is the youngest customer in {city}?",),
      "SELECT name FROM customers WHERE city = '{city}' ORDER BY age LIMIT 1"),
    T("city_by_age", ("List the customers in {city} from oldest to youngest.",),
      "SELECT name FROM customers WHERE city = '{city}' ORDER BY age DESC"),
    T("age_between", ("Which customers are between {age} and {age_hi} years old?",),
      "SELECT name FROM customers WHERE age BETWEEN {age} AND {age_hi}"),
    T("cities_more_than", ("Which cities have more than {k} customers?",),
      "SELECT city FROM customers GROUP BY city HAVING COUNT(*) > {k}"),
    T("max_age_city", ("What is the age of the oldest customer in {city}?",),
      "SELECT MAX(age) FROM customers WHERE city = '{city}'"),
    T("min_age_country", ("What is the age of the youngest customer in {country}?",),
      f"SELECT MIN(c.age) {J_CCI} WHERE ci.country = '{{country}}'"),
    # --- cities
    T("cities_in_country", ("Which cities are in {country}?", "List the cities in {country}."),
      "SELECT name FROM cities WHERE country = '{country}'"),
    T("country_of_city", ("In which country is {city}?", "Which country is {city} in?"),
      "SELECT country FROM cities WHERE name = '{city}'"),
    T("customers_in_country", ("Which customers live in {country}?",
                               "List the customers from {country}."),
      f"SELECT c.name {J_CCI} WHERE ci.country = '{{country}}'"),
    T("count_country", ("How many customers live in {country}?",),
      f"SELECT COUNT(*) {J_CCI} WHERE ci.country = '{{country}}'"),
    T("country_older", ("Which customers from {country} are older than {age}?",),
      f"SELECT c.name {J_CCI} WHERE ci.country = '{{country}}' AND c.age > {{age}}"),
    # --- products
    T("price_of", ("What does the {product} cost?", "What is the price of the {product}?"),
      "SELECT price FROM products WHERE name = '{product}'"),
    T("category_of", ("Which category does the {product} belong to?",
                      "What category is the {product} in?"),
      "SELECT category FROM products WHERE name = '{product}'"),
    T("products_in_category", ("Which products are in the {category} category?",
                               "List the {category} products."),
      "SELECT name FROM products WHERE category = '{category}'"),
    T("cheaper_than", ("Which products cost less than {price}?",),
      "SELECT name FROM products WHERE price < {price}"),
    T("dearer_than", ("Which products cost more than {price}?",),
      "SELECT name FROM products WHERE price > {price}"),
    T("category_cheaper", ("Which {category} products cost less than {price}?",),
      "SELECT name FROM products WHERE category = '{category}' AND price < {price}"),
    T("priciest_in_category", ("What is the most expensive product in {category}?",),
      "SELECT name FROM products WHERE category = '{category}' ORDER BY price DESC LIMIT 1"),
    T("cheapest_in_category", ("What is the cheapest product in {category}?",),
      "SELECT name FROM products WHERE category = '{category}' ORDER BY price LIMIT 1"),
    T("n_cheapest", ("List the {n} cheapest products.",),
      "SELECT name FROM products ORDER BY price LIMIT {n}"),
    T("n_priciest_category", ("List the {n} most expensive {category} products.",),
      "SELECT name FROM products WHERE category = '{category}' ORDER BY price DESC LIMIT {n}"),
    T("avg_price_category", ("What is the average price of {category} products?",),
      "SELECT AVG(price) FROM products WHERE category = '{category}'"),
    T("count_category", ("How many products are in the {category} category?",),
      "SELECT COUNT(*) FROM products WHERE category = '{category}'"),
    T("count_dearer", ("How many products cost more than {price}?",),
      "SELECT COUNT(*) FROM products WHERE price > {price}"),
    # --- orders
    T("orders_in_year", ("How many orders were placed in {year}?",),
      "SELECT COUNT(*) FROM orders WHERE year = {year}"),
    T("quantity_in_year", ("What was the total quantity ordered in {year}?",),
      "SELECT SUM(quantity) FROM orders WHERE year = {year}"),
    T("buyers_in_year", ("How many customers placed orders in {year}?",),
      "SELECT COUNT(DISTINCT customer_id) FROM orders WHERE year = {year}"),
    T("products_of_customer", ("Which products did {customer} order?",
                               "What has {customer} bought?"),
      f"SELECT DISTINCT p.name {J_OPC} WHERE c.name = '{{customer}}'"),
    T("orders_of_customer", ("How many orders did {customer} place?",),
      f"SELECT COUNT(*) {J_OC} WHERE c.name = '{{customer}}'"),
    T("buyers_of_product", ("Which customers bought the {product}?", "Who ordered the {product}?"),
      f"SELECT DISTINCT c.name {J_OPC} WHERE p.name = '{{product}}'"),
    T("units_product_year", ("How many units of the {product} were sold in {year}?",),
      f"SELECT SUM(o.quantity) {J_OP} WHERE p.name = '{{product}}' AND o.year = {{year}}"),
    T("orders_from_city", ("How many orders came from customers in {city}?",),
      f"SELECT COUNT(*) {J_OC} WHERE c.city = '{{city}}'"),
    T("orders_city_year", ("How many orders came from {city} in {year}?",),
      f"SELECT COUNT(*) {J_OC} WHERE c.city = '{{city}}' AND o.year = {{year}}"),
    T("spent_by", ("How much did {customer} spend in total?",),
      f"SELECT SUM(o.quantity * p.price) {J_OPC} WHERE c.name = '{{customer}}'"),
    T("revenue_category_year", ("What was the revenue from {category} products in {year}?",),
      f"SELECT SUM(o.quantity * p.price) {J_OP} WHERE p.category = '{{category}}' AND o.year = {{year}}"),
    T("years_of_customer", ("In which years did {customer} place orders?",),
      f"SELECT DISTINCT o.year {J_OC} WHERE c.name = '{{customer}}'"),
    T("city_buyers_year", ("Which customers from {city} ordered in {year}?",),
      f"SELECT DISTINCT c.name {J_OC} WHERE c.city = '{{city}}' AND o.year = {{year}}"),
    T("top_buyers_year", ("Which {n} customers placed the most orders in {year}?",),
      f"SELECT c.name {J_OC} WHERE o.year = {{year}} GROUP BY c.name ORDER BY COUNT(*) DESC LIMIT {{n}}"),
    T("products_city_year", ("Which products were ordered from {city} in {year}?",),
      f"SELECT DISTINCT p.name {J_OPC} WHERE c.city = '{{city}}' AND o.year = {{year}}"),
    T("orders_category_year", ("How many orders of {category} products were placed in {year}?",),
      f"SELECT COUNT(*) {J_OP} WHERE p.category = '{{category}}' AND o.year = {{year}}"),
    T("categories_of_customer", ("Which product categories did {customer} buy from?",),
      f"SELECT DISTINCT p.category {J_OPC} WHERE c.name = '{{customer}}'"),
    T("max_quantity_product", ("What is the largest quantity in one order of the {product}?",),
      f"SELECT MAX(o.quantity) {J_OP} WHERE p.name = '{{product}}'"),
)
