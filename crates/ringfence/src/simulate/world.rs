//! The simulated world: cities, merchants with a category and a place, and customers with a
//! home, their own cards, devices and IP, and spending habits.
//!
//! Everything here is drawn once from the seed; the traffic generator then only picks from it.
//! Identifiers never carry the ground truth (no "fraud" or "ring" in an id): the engine must
//! find fraud from behaviour, not from names.

use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_distr::LogNormal;

/// A city where people live or where fraud happens.
#[derive(Debug, Clone, Copy)]
pub(crate) struct City {
    pub name: &'static str,
    pub country: &'static str,
    pub currency: &'static str,
    pub lat: f64,
    pub lon: f64,
    /// First octet of the residential IP range the simulator uses for this city.
    pub ip_octet: u8,
}

const fn city(
    name: &'static str,
    country: &'static str,
    currency: &'static str,
    lat: f64,
    lon: f64,
    ip_octet: u8,
) -> City {
    City {
        name,
        country,
        currency,
        lat,
        lon,
        ip_octet,
    }
}

/// Where customers live and most merchants are.
pub(crate) const HOME_CITIES: [City; 9] = [
    city("New York", "US", "USD", 40.7128, -74.0060, 73),
    city("Chicago", "US", "USD", 41.8781, -87.6298, 98),
    city("San Francisco", "US", "USD", 37.7749, -122.4194, 67),
    city("London", "GB", "GBP", 51.5074, -0.1278, 81),
    city("Manchester", "GB", "GBP", 53.4808, -2.2426, 86),
    city("Paris", "FR", "EUR", 48.8566, 2.3522, 90),
    city("Lyon", "FR", "EUR", 45.7640, 4.8357, 92),
    city("Berlin", "DE", "EUR", 52.5200, 13.4050, 84),
    city("Munich", "DE", "EUR", 48.1351, 11.5820, 79),
];

/// Far from every home city: where cloned cards and taken-over accounts turn up.
pub(crate) const FAR_CITIES: [City; 5] = [
    city("Lagos", "NG", "NGN", 6.5244, 3.3792, 105),
    city("Singapore", "SG", "SGD", 1.3521, 103.8198, 116),
    city("Sao Paulo", "BR", "BRL", -23.5505, -46.6333, 177),
    city("Jakarta", "ID", "IDR", -6.2088, 106.8456, 36),
    city("Manila", "PH", "PHP", 14.5995, 120.9842, 112),
];

/// First octets of hosting and proxy ranges fraudsters connect from.
pub(crate) const PROXY_OCTETS: [u8; 6] = [45, 91, 103, 146, 185, 193];

/// What a merchant sells; drives amounts, card-present versus online, and popularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Category {
    Grocery,
    Fuel,
    Restaurants,
    Fashion,
    Electronics,
    Travel,
    Gambling,
    DigitalGoods,
}

impl Category {
    pub const ALL: [Category; 8] = [
        Category::Grocery,
        Category::Fuel,
        Category::Restaurants,
        Category::Fashion,
        Category::Electronics,
        Category::Travel,
        Category::Gambling,
        Category::DigitalGoods,
    ];

    /// The wire name sent as `merchant_category`.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Grocery => "grocery",
            Category::Fuel => "fuel",
            Category::Restaurants => "restaurants",
            Category::Fashion => "fashion",
            Category::Electronics => "electronics",
            Category::Travel => "travel",
            Category::Gambling => "gambling",
            Category::DigitalGoods => "digital_goods",
        }
    }

    /// Typical ticket relative to the customer's mean spend.
    pub fn amount_factor(self) -> f64 {
        match self {
            Category::Grocery => 1.0,
            Category::Fuel => 1.1,
            Category::Restaurants => 0.8,
            Category::Fashion => 1.6,
            Category::Electronics => 3.0,
            Category::Travel => 5.0,
            Category::Gambling => 1.2,
            Category::DigitalGoods => 0.3,
        }
    }

    /// Share of this category's payments made online rather than at a terminal.
    pub fn online_share(self) -> f64 {
        match self {
            Category::Grocery => 0.05,
            Category::Fuel => 0.0,
            Category::Restaurants => 0.1,
            Category::Fashion => 0.4,
            Category::Electronics => 0.5,
            Category::Travel => 0.85,
            Category::Gambling | Category::DigitalGoods => 1.0,
        }
    }

    /// Relative share of merchants and of everyday payments.
    fn popularity(self) -> f64 {
        match self {
            Category::Grocery => 30.0,
            Category::Fuel => 12.0,
            Category::Restaurants => 22.0,
            Category::Fashion => 10.0,
            Category::Electronics => 7.0,
            Category::Travel => 4.0,
            Category::Gambling => 2.0,
            Category::DigitalGoods => 8.0,
        }
    }

    fn brands(self) -> &'static [&'static str] {
        match self {
            Category::Grocery => &["FreshMart", "GreenBasket", "DailyFoods", "CornerGrocer"],
            Category::Fuel => &["QuickFuel", "RoadStar", "PetroPoint"],
            Category::Restaurants => &["Bistro Nova", "Noodle Bar", "Grill House", "Cafe Luna"],
            Category::Fashion => &["Threadline", "UrbanWear", "Maison Fil"],
            Category::Electronics => &["VoltHub", "PixelStore", "CircuitCity"],
            Category::Travel => &["SkyTrips", "RailGo", "StayWell Hotels"],
            Category::Gambling => &["LuckySpin", "BetArena"],
            Category::DigitalGoods => &["GameVault", "AppCredits", "StreamBox", "GiftKeys"],
        }
    }
}

/// A place that takes card payments.
#[derive(Debug, Clone)]
pub(crate) struct Merchant {
    pub name: String,
    pub category: Category,
    pub city: City,
    pub lat: f64,
    pub lon: f64,
    /// Number of payment terminals in the store (at least 1).
    pub terminals: u32,
}

/// Most regular merchants a customer has.
const MAX_REGULARS: usize = 8;

/// A cardholder with habits. Kept compact (ids are derived, not stored as text) because a
/// realistic world at a few hundred transactions per second has hundreds of thousands.
#[derive(Debug, Clone)]
pub(crate) struct Customer {
    serial: u32,
    /// Indices into [`FIRST_NAMES`], [`LAST_NAMES`] and [`MAIL_DOMAINS`].
    name: [u8; 3],
    home_index: u8,
    pub lat: f64,
    pub lon: f64,
    card_count: u8,
    device_count: u8,
    ip: [u8; 4],
    /// Mean spend per payment, in the home currency.
    pub mean_amount: f64,
    regular_count: u8,
    regulars: [u32; MAX_REGULARS],
}

impl Customer {
    /// The account id.
    pub fn user_id(&self) -> String {
        format!("user-{:06}", self.serial)
    }

    /// The e-mail address on the account.
    pub fn email(&self) -> String {
        let [first, last, domain] = self.name.map(usize::from);
        format!(
            "{}.{}{}@{}",
            FIRST_NAMES[first % FIRST_NAMES.len()],
            LAST_NAMES[last % LAST_NAMES.len()],
            self.serial,
            MAIL_DOMAINS[domain % MAIL_DOMAINS.len()]
        )
    }

    /// The city the customer lives in.
    pub fn home(&self) -> City {
        HOME_CITIES[self.home_index()]
    }

    /// Index of [`Customer::home`] in [`HOME_CITIES`].
    pub fn home_index(&self) -> usize {
        usize::from(self.home_index) % HOME_CITIES.len()
    }

    /// How many cards the customer has (1 or 2).
    pub fn card_count(&self) -> usize {
        usize::from(self.card_count.max(1))
    }

    /// Card `k` (0 is the main card).
    pub fn card(&self, k: usize) -> String {
        let k = (k % self.card_count()) as u64;
        format!("card-{:016x}", entity_key(self.serial, k))
    }

    /// How many devices the customer has (1 or 2).
    pub fn device_count(&self) -> usize {
        usize::from(self.device_count.max(1))
    }

    /// Device `k` (0 is the main phone).
    pub fn device(&self, k: usize) -> String {
        let k = (k % self.device_count()) as u64;
        format!("dev-{:016x}", entity_key(self.serial, 2 + k))
    }

    /// The home IP address.
    pub fn ip(&self) -> String {
        let [a, b, c, d] = self.ip;
        format!("{a}.{b}.{c}.{d}")
    }

    /// Merchants near home the customer keeps going back to.
    pub fn regulars(&self) -> &[u32] {
        &self.regulars[..usize::from(self.regular_count).min(MAX_REGULARS)]
    }
}

/// A distinct key per (customer, slot): the mix is a bijection, so distinct inputs never
/// collide and two customers can never share a card or a device by accident.
fn entity_key(serial: u32, slot: u64) -> u64 {
    mix64(WORLD_SEED ^ ((u64::from(serial) << 4) | slot))
}

/// splitmix64's finaliser: a bijection on u64 that scatters neighbouring inputs.
pub(super) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The world does not depend on the traffic seed: runs with different seeds against one
/// server meet the same customers in the same cities, not strangers with reused ids.
const WORLD_SEED: u64 = 0x5249_4e47_4645_4e43;

/// Everything the traffic generator picks from.
#[derive(Debug, Clone)]
pub(crate) struct World {
    pub customers: Vec<Customer>,
    /// How often each customer pays, as sampling weights (payments per day).
    pub customer_picker: WeightedIndex<f64>,
    pub merchants: Vec<Merchant>,
    /// Indices into `merchants` per home city (same order as [`HOME_CITIES`]).
    pub merchants_by_city: Vec<Vec<usize>>,
    /// Indices into `merchants` per category (same order as [`Category::ALL`]).
    pub merchants_by_category: Vec<Vec<usize>>,
    /// Merchants in [`FAR_CITIES`], same order; only fraud ever pays there.
    pub far_merchants: Vec<Vec<usize>>,
    /// Indices into `merchants` per home city, then per category.
    local: Vec<Vec<Vec<usize>>>,
    category_picker: WeightedIndex<f64>,
}

const FIRST_NAMES: [&str; 16] = [
    "anna", "ben", "chloe", "david", "emma", "felix", "grace", "hugo", "ines", "jack", "lea",
    "marco", "nina", "omar", "paul", "sara",
];
const LAST_NAMES: [&str; 12] = [
    "smith", "martin", "muller", "brown", "dubois", "schmidt", "jones", "bernard", "fischer",
    "taylor", "moreau", "weber",
];
const MAIL_DOMAINS: [&str; 5] = [
    "gmail.com",
    "outlook.com",
    "yahoo.com",
    "proton.me",
    "icloud.com",
];
/// Throwaway mailbox providers fraudsters sign up with.
pub(crate) const THROWAWAY_DOMAINS: [&str; 4] = [
    "mailinator.com",
    "tempmail.dev",
    "guerrillamail.com",
    "10minutemail.net",
];

impl World {
    /// The world with `customers` customers and about `merchants` merchants. It depends on
    /// the sizes only, and customer `i` is the same person whatever the size.
    pub fn generate(customers: usize, merchants: usize) -> World {
        let customers = customers.clamp(1, u32::MAX as usize);
        let merchants = merchants.max(Category::ALL.len() * HOME_CITIES.len());
        let category_picker = weighted(Category::ALL.iter().map(|c| c.popularity()));
        let mut rng = SmallRng::seed_from_u64(WORLD_SEED);

        let mut world = World {
            customers: Vec::with_capacity(customers),
            customer_picker: weighted([1.0].into_iter()),
            merchants: Vec::with_capacity(merchants + FAR_CITIES.len() * 4),
            merchants_by_city: vec![Vec::new(); HOME_CITIES.len()],
            merchants_by_category: vec![Vec::new(); Category::ALL.len()],
            far_merchants: vec![Vec::new(); FAR_CITIES.len()],
            local: vec![vec![Vec::new(); Category::ALL.len()]; HOME_CITIES.len()],
            category_picker,
        };

        // Every home city gets every category once, so any customer can shop anything locally;
        // the rest follows category popularity.
        for i in 0..merchants {
            let city_index = i % HOME_CITIES.len();
            let category = if i < Category::ALL.len() * HOME_CITIES.len() {
                Category::ALL[i / HOME_CITIES.len()]
            } else {
                world.pick_category(&mut rng)
            };
            let index = world.add_merchant(&mut rng, HOME_CITIES[city_index], category, i);
            world.merchants_by_city[city_index].push(index);
            world.local[city_index][category_index(category)].push(index);
        }
        let far_categories = [
            Category::Electronics,
            Category::Fashion,
            Category::Fuel,
            Category::Restaurants,
        ];
        for (far_index, far_city) in FAR_CITIES.iter().enumerate() {
            for (k, category) in far_categories.iter().enumerate() {
                let serial = merchants + far_index * far_categories.len() + k;
                let index = world.add_merchant(&mut rng, *far_city, *category, serial);
                world.far_merchants[far_index].push(index);
            }
        }

        let spend = LogNormal::new(45f64.ln(), 0.6).unwrap_or_else(|_| unreachable!("sigma > 0"));
        let activity =
            LogNormal::new(1.2f64.ln(), 0.7).unwrap_or_else(|_| unreachable!("sigma > 0"));
        let mut rates = Vec::with_capacity(customers);
        for serial in 0..customers as u32 {
            let mut rng = SmallRng::seed_from_u64(mix64(WORLD_SEED ^ u64::from(serial)));
            let customer = world.new_customer(&mut rng, serial, &spend);
            world.customers.push(customer);
            rates.push(activity.sample(&mut rng).clamp(0.05, 20.0));
        }
        world.customer_picker = weighted(rates.into_iter());
        world
    }

    fn add_merchant(
        &mut self,
        rng: &mut SmallRng,
        city: City,
        category: Category,
        serial: usize,
    ) -> usize {
        let brand = category.brands().choose(rng).copied().unwrap_or("Shop");
        let (lat, lon) = jitter(rng, city.lat, city.lon, 0.08);
        let index = self.merchants.len();
        self.merchants.push(Merchant {
            name: format!("{brand} {} #{serial}", city.name),
            category,
            city,
            lat,
            lon,
            terminals: rng.random_range(1..=6),
        });
        self.merchants_by_category[category_index(category)].push(index);
        index
    }

    fn new_customer(&self, rng: &mut SmallRng, serial: u32, spend: &LogNormal<f64>) -> Customer {
        let home_index = rng.random_range(0..HOME_CITIES.len());
        let home = HOME_CITIES[home_index];
        let (lat, lon) = jitter(rng, home.lat, home.lon, 0.1);
        let local = &self.merchants_by_city[home_index];
        let mut regulars = [0u32; MAX_REGULARS];
        let mut regular_count = 0u8;
        let wanted = rng.random_range(4..=MAX_REGULARS);
        for (slot, &m) in regulars.iter_mut().zip(local.choose_multiple(rng, wanted)) {
            *slot = u32::try_from(m).unwrap_or(0);
            regular_count += 1;
        }
        Customer {
            serial,
            name: [
                rng.random_range(0..FIRST_NAMES.len()) as u8,
                rng.random_range(0..LAST_NAMES.len()) as u8,
                rng.random_range(0..MAIL_DOMAINS.len()) as u8,
            ],
            home_index: home_index as u8,
            lat,
            lon,
            card_count: rng.random_range(1..=2),
            device_count: rng.random_range(1..=2),
            ip: [
                home.ip_octet,
                rng.random(),
                rng.random(),
                rng.random_range(1..=254),
            ],
            mean_amount: spend.sample(rng).clamp(3.0, 2_000.0),
            regular_count,
            regulars,
        }
    }

    /// A category drawn by popularity.
    pub fn pick_category(&self, rng: &mut SmallRng) -> Category {
        Category::ALL[self.category_picker.sample(rng)]
    }

    /// A merchant of `category` (any city), if the world has one.
    pub fn merchant_of(&self, rng: &mut SmallRng, category: Category) -> Option<usize> {
        self.merchants_by_category[category_index(category)]
            .choose(rng)
            .copied()
    }

    /// Merchants of `category` in home city `home_index`.
    pub fn local_merchants(&self, home_index: usize, category: Category) -> &[usize] {
        self.local
            .get(home_index)
            .map_or(&[], |by_category| &by_category[category_index(category)])
    }

    /// A random far city and one of its merchants.
    pub fn far_merchant(&self, rng: &mut SmallRng) -> Option<(City, usize)> {
        let far_index = rng.random_range(0..FAR_CITIES.len());
        let merchant = self.far_merchants[far_index].choose(rng).copied()?;
        Some((FAR_CITIES[far_index], merchant))
    }
}

/// Position of `category` in [`Category::ALL`].
pub(crate) fn category_index(category: Category) -> usize {
    category as usize
}

fn weighted(weights: impl Iterator<Item = f64>) -> WeightedIndex<f64> {
    // Weights are positive constants or clamped samples, so construction cannot fail.
    WeightedIndex::new(weights).unwrap_or_else(|_| unreachable!("positive weights"))
}

/// A point within about `spread` degrees of (`lat`, `lon`), rounded to 4 decimals (~10 m).
pub(crate) fn jitter(rng: &mut SmallRng, lat: f64, lon: f64, spread: f64) -> (f64, f64) {
    let lat = lat + rng.random_range(-spread..=spread);
    let lon = lon + rng.random_range(-spread..=spread);
    (
        round4(lat.clamp(-90.0, 90.0)),
        round4(lon.clamp(-180.0, 180.0)),
    )
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// A fresh card id that looks like any other.
pub(crate) fn card_id(rng: &mut SmallRng) -> String {
    format!("card-{:016x}", rng.random::<u64>())
}

/// A fresh device fingerprint that looks like any other.
pub(crate) fn device_id(rng: &mut SmallRng) -> String {
    format!("dev-{:016x}", rng.random::<u64>())
}

/// A random IPv4 address whose first octet is `first`.
pub(crate) fn ip_in(rng: &mut SmallRng, first: u8) -> String {
    format!(
        "{first}.{}.{}.{}",
        rng.random::<u8>(),
        rng.random::<u8>(),
        rng.random_range(1..=254u8)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringfence_core::event::GeoPoint;

    #[test]
    fn world_has_local_merchants_of_every_category_everywhere() {
        let world = World::generate(50, 100);
        assert_eq!(world.customers.len(), 50);
        for local in &world.merchants_by_city {
            for category in Category::ALL {
                assert!(local
                    .iter()
                    .any(|&m| world.merchants[m].category == category));
            }
        }
        for customer in &world.customers {
            assert!(!customer.regulars().is_empty());
            assert!((1..=2).contains(&customer.card_count()));
            assert!((1..=2).contains(&customer.device_count()));
            for &m in customer.regulars() {
                assert_eq!(world.merchants[m as usize].city.name, customer.home().name);
            }
        }
    }

    #[test]
    fn customers_are_the_same_people_whatever_the_world_size() {
        let small = World::generate(10, 300);
        let large = World::generate(5000, 300);
        for (a, b) in small.customers.iter().zip(&large.customers) {
            assert_eq!(a.user_id(), b.user_id());
            assert_eq!(a.email(), b.email());
            assert_eq!(a.card(0), b.card(0));
            assert_eq!(a.home().name, b.home().name);
            assert_eq!(a.regulars(), b.regulars());
        }
        let mut cards = std::collections::HashSet::new();
        let mut emails = std::collections::HashSet::new();
        for c in &large.customers {
            for k in 0..c.card_count() {
                assert!(cards.insert(c.card(k)));
            }
            assert!(emails.insert(c.email()));
        }
    }

    #[test]
    fn category_index_follows_all() {
        for (i, c) in Category::ALL.iter().enumerate() {
            assert_eq!(category_index(*c), i);
        }
    }

    #[test]
    fn far_cities_are_far_from_every_home() {
        for home in HOME_CITIES {
            for far in FAR_CITIES {
                let d = GeoPoint {
                    lat: home.lat,
                    lon: home.lon,
                }
                .distance_km(GeoPoint {
                    lat: far.lat,
                    lon: far.lon,
                });
                assert!(d > 4_000.0, "{} -> {}: {d}", home.name, far.name);
            }
        }
    }
}
