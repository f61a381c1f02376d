"""The package version, in a module of its own: any module may import it without importing the
package root (whose convenience names import the package's heavier modules)."""

__version__ = "0.1.0"
