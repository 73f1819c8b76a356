package schema

// Config maps events onto the columns of one Power BI table.
type Config struct {
	// Columns of the table, in order. At most 75.
	Columns []Column `yaml:"columns"`
	// EpochUnit says how a number in a DateTime column is read: "seconds"
	// (default) or "milliseconds".
	EpochUnit string `yaml:"epoch_unit"`
	// StringOverflow says what happens to a string over 4,000 characters:
	// "reject" (default: the object goes to the dead letter) or "truncate".
	StringOverflow string `yaml:"string_overflow"`
}

// Column is one column of the table and where its value comes from.
type Column struct {
	// Name of the column in Power BI.
	Name string `yaml:"name"`
	// Type is the Power BI data type: Int64, Double, Boolean, DateTime,
	// String or Decimal (case-insensitive; aliases int, bool, ...).
	Type string `yaml:"type"`
	// From is a dotted path into the event ("device.id", "readings.0.value");
	// paths starting with "@" read source metadata (@key, @topic, @partition,
	// @offset, @timestamp, @headers.NAME). Empty means the column name.
	From string `yaml:"from"`
	// Default is used when the path is missing or null.
	Default any `yaml:"default"`
	// Required makes a missing value (with no default) an error for the object.
	Required bool `yaml:"required"`
}

// Meta gives values that live outside the event body, such as Kafka record
// fields. source.Metadata implements it.
type Meta interface {
	MetaValue(name string) (any, bool)
}
